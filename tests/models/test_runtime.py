"""Backends: providers that are not here fall back to CPU with a log line; missing files are typed errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from facelink.errors import ModelError
from facelink.models.runtime import OnnxRuntimeBackend, OpenCVBackend, make_backend


def test_gpu_providers_fall_back_to_cpu(models_dir, caplog):
    import onnxruntime as ort

    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    if any(p in ort.get_available_providers() for p in wanted):
        pytest.skip("a GPU provider is present here")
    with caplog.at_level(logging.INFO, logger="facelink.models.runtime"):
        backend = OnnxRuntimeBackend(models_dir / "sface_fp32.onnx", providers=wanted, threads=1)
    assert backend.providers == ["CPUExecutionProvider"]
    assert "not available here" in caplog.text and "CPUExecutionProvider" in caplog.text
    out = backend.run(np.zeros((2, 3, 112, 112), np.float32))[0]
    assert out.shape == (2, 128)


def test_opencv_and_onnxruntime_agree(models_dir):
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    a = OnnxRuntimeBackend(models_dir / "sface_fp32.onnx").run(x)[0].ravel()
    b = OpenCVBackend(models_dir / "sface_int8bq_pruned.onnx").run(x)[0].ravel()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999


def test_missing_or_unknown_models_are_typed(tmp_path):
    with pytest.raises(ModelError, match="facelink models"):
        OnnxRuntimeBackend(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="unknown backend"):
        make_backend("tensorflow", tmp_path / "x.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelError):
        OnnxRuntimeBackend(tmp_path / "bad.onnx")
    with pytest.raises(ModelError):
        OpenCVBackend(tmp_path / "bad.onnx")


def test_engine_without_models_says_how_to_get_them(tmp_path):
    from facelink.config import ModelSettings
    from facelink.models.engine import FaceEngine

    with pytest.raises(ModelError, match="run `facelink models`"):
        FaceEngine.from_settings(ModelSettings(models_dir=tmp_path))


def test_opencv_backend_leaves_the_process_thread_setting_alone(models_dir):
    """OpenCV's pool is process-wide: building and running a backend must not change it
    (issue 8 item 12), and the backend still runs with its own budget."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        backend = OpenCVBackend(models_dir / "sface_int8bq_pruned.onnx", threads=1)
        assert cv2.getNumThreads() == 3
        out = backend.run(np.zeros((1, 3, 112, 112), np.float32))[0]
        assert out.shape[-1] == 128 and backend.threads == 1
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


def test_one_thread_budget_for_every_backend():
    import os

    from facelink.models.runtime import thread_budget

    assert thread_budget(3) == 3
    assert thread_budget(0) == len(os.sched_getaffinity(0))
