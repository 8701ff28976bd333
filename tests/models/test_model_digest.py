"""The models the door runs are the ones `facelink models` fetched and built: a file whose SHA-256
is not the manifest's (taken from a wheel) or models.lock.json's (built) is refused at load, as
`facelink models` refuses it. A swapped embedder puts wrong identities on faces."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facelink.config import ModelSettings
from facelink.errors import ModelError
from facelink.models.engine import FaceEngine
from facelink.models.provision import LOCK_NAME


def _everyone_is_the_same_embedder(path):
    """A valid SFace stand-in (same input and output) that gives every face the same vector: any
    enrolled user then matches every stranger at Similarity 100."""
    w = numpy_helper.from_array(np.zeros((3, 128), np.float32), "w")
    b = numpy_helper.from_array(np.ones(128, np.float32), "b")
    nodes = [helper.make_node("ReduceMean", ["data"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["fc1"])]
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 128])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture()
def local_models(tmp_path, models_dir):
    local = tmp_path / "models"
    local.mkdir()
    for name in ("yunet_fp32.onnx", "yunet_2023mar_int8bq.onnx", "sface_fp32_dw.onnx", LOCK_NAME):
        shutil.copy(models_dir / name, local / name)
    return local


def test_intact_models_load(local_models):
    assert FaceEngine.from_settings(ModelSettings(models_dir=local_models, threads=1)).model_version


def test_a_swapped_built_embedder_is_refused(local_models):
    _everyone_is_the_same_embedder(local_models / "sface_fp32_dw.onnx")
    with pytest.raises(ModelError, match=r"sface_fp32_dw\.onnx.*SHA-256"):
        FaceEngine.from_settings(ModelSettings(models_dir=local_models, threads=1))


def test_a_changed_shipped_detector_is_refused(local_models):
    """detector_backend = "opencv" runs the file taken from the wheel: checked against the manifest."""
    shutil.copy(local_models / "yunet_fp32.onnx", local_models / "yunet_2023mar_int8bq.onnx")  # OpenCV loads it
    with pytest.raises(ModelError, match=r"yunet_2023mar_int8bq\.onnx.*SHA-256"):
        FaceEngine.from_settings(ModelSettings(models_dir=local_models, detector_backend="opencv", threads=1))


def test_built_models_without_their_digests_are_refused(local_models):
    (local_models / LOCK_NAME).unlink()
    with pytest.raises(ModelError, match="run `facelink models`"):
        FaceEngine.from_settings(ModelSettings(models_dir=local_models, threads=1))


@pytest.fixture()
def tflite_models(tmp_path, models_dir):
    """The --tflite models (files taken from a wheel: checked against the manifest)."""
    names = ("blazeface_short_range.tflite", "face_landmark.tflite", "iris_landmark.tflite")
    if not all((models_dir / n).is_file() for n in names):
        pytest.skip("the --tflite models are not provisioned (facelink models --tflite)")
    local = tmp_path / "tflite"
    local.mkdir()
    for name in names:
        shutil.copy(models_dir / name, local / name)
    return local


def test_a_changed_presence_gate_model_is_refused(tflite_models):
    """models.presence_gate = "blazeface": a swapped BlazeFace can skip every frame with a face."""
    from facelink.device.daemon import presence_gate

    with open(tflite_models / "blazeface_short_range.tflite", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match=r"blazeface_short_range\.tflite.*SHA-256"):
        presence_gate(ModelSettings(models_dir=tflite_models, presence_gate="blazeface", threads=1))


@pytest.mark.parametrize("name", ["face_landmark.tflite", "iris_landmark.tflite"])
def test_a_changed_blink_model_is_refused(tflite_models, name):
    """liveness.require_blink: a swapped face-mesh or iris model can pass a photo as a blink."""
    from facelink.device.liveness import load_face_mesh

    with open(tflite_models / name, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match=name.replace(".", r"\.") + ".*SHA-256"):
        load_face_mesh(tflite_models, threads=1)
