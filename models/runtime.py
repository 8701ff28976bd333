"""Inference backends behind one small interface.

``Backend.run(tensor) -> list[np.ndarray]`` is all the detector and the embedder need.
onnxruntime is the default (execution providers from config, falling back to CPU with a log
line saying which ran); OpenCV DNN is the reference/fallback; TFLite (ai-edge-litert first,
tflite-runtime second) is an optional extra for Coral/Pi delegates.

Threads are owned here, in one place: ``thread_budget`` turns the ``models.threads`` setting
into a count (0: the CPUs this process may run on) and every backend of an engine gets that
budget. The models run one after the other, never at once, so they share it rather than split
it. onnxruntime's pools are per session and do not spin-wait between runs (spinning threads
compete with the next model's threads; measured in README, Performance). OpenCV's pool is
process-wide: an OpenCV backend applies its count only for the duration of its own forward
pass and restores the caller's setting afterwards, so building or running an engine never
changes the process's OpenCV configuration.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from facelink.errors import ModelError

log = logging.getLogger(__name__)


def thread_budget(threads: int = 0) -> int:
    """Inference threads for one engine: ``threads`` if set, else the CPUs this process may use."""
    if threads > 0:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def limit_blas_threads(threads: int = 1) -> int | None:
    """Cap numpy's BLAS pool at ``threads``; returns the cap in force (None: no BLAS found).

    OpenBLAS's workers spin-wait after a multi-threaded call, as onnxruntime's did, and then hold
    the core that the next model's threads and the door's int8 scan (which starts its own
    threads) need (README, Performance: Search). The door's own BLAS calls are small (re-rank,
    small galleries). The door calls this once at start."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(threads, user_api="blas")
    counts = [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else None


class Backend(Protocol):
    name: str

    def run(self, tensor: np.ndarray) -> list[np.ndarray]: ...


class OnnxRuntimeBackend:
    """onnxruntime session; providers are tried in order, CPU is always the last resort."""

    def __init__(self, path: Path, *, providers: list[str] | None = None, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
            raise ModelError("onnxruntime is not installed: pip install onnxruntime") from exc
        if not Path(path).is_file():
            raise ModelError(f"model file missing: {path} (run `facelink models`)")
        available = set(ort.get_available_providers())
        wanted = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        missing = [p for p in (providers or []) if p not in available]
        if missing:
            log.warning("execution providers not available here, skipped: %s", ", ".join(missing))
        if "CPUExecutionProvider" not in wanted:
            wanted.append("CPUExecutionProvider")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = thread_budget(threads)
        opts.inter_op_num_threads = 1
        # idle pool threads sleep instead of spinning: the other model (and the next frame's
        # pre-processing) needs those cores right after this run
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=wanted)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several untyped errors
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        self.providers = self._session.get_providers()
        self.name = f"onnxruntime[{self.providers[0]}]"
        log.info("loaded %s with %s", Path(path).name, self.providers[0])

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self._session.run(None, {self._input: tensor})


class OpenCVBackend:
    """OpenCV DNN: the reference path and the fallback when onnxruntime is unavailable.

    OpenCV's thread count is process-wide; this backend sets it only around its own forward
    pass (a few microseconds when it differs, nothing when it matches) and puts the caller's
    value back, so the rest of the process is never affected. Engines running concurrently
    with the same budget (bulk enrollment's workers) leave the process's value unchanged too.
    """

    name = "opencv-dnn"

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        self.threads = thread_budget(threads)
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise ModelError(f"OpenCV DNN cannot load {path}: {exc}") from exc
        self._outputs = list(self._net.getUnconnectedOutLayersNames())

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        before = cv2.getNumThreads()
        if before != self.threads:
            cv2.setNumThreads(self.threads)
        try:
            self._net.setInput(tensor)
            outs = self._net.forward(self._outputs)
        finally:
            if before != self.threads:
                cv2.setNumThreads(before)
        return [np.asarray(o) for o in outs]


def load_tflite_interpreter(path: Path, *, threads: int = 0, delegate: str | None = None):
    """A TFLite interpreter from ai-edge-litert, else tflite-runtime; clear error if neither."""
    interpreter_cls = None
    load_delegate = None
    try:
        from ai_edge_litert.interpreter import Interpreter as interpreter_cls  # type: ignore
        from ai_edge_litert.interpreter import load_delegate  # type: ignore
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter as interpreter_cls  # type: ignore
            from tflite_runtime.interpreter import load_delegate  # type: ignore
        except ImportError as exc:
            raise ModelError(
                "TFLite backend needs ai-edge-litert (pip install 'facelink[tflite]') or "
                "tflite-runtime (numpy<2 only)") from exc
    delegates = [load_delegate(delegate)] if delegate else None
    interp = interpreter_cls(model_path=str(path), num_threads=threads or None,
                             experimental_delegates=delegates)
    interp.allocate_tensors()
    return interp


class TFLiteBackend:
    """Runs a .tflite model; used for BlazeFace on Coral/Pi delegates (optional extra)."""

    name = "tflite"

    def __init__(self, path: Path, *, threads: int = 0, delegate: str | None = None) -> None:
        self._interp = load_tflite_interpreter(path, threads=threads, delegate=delegate)
        self._in = self._interp.get_input_details()[0]["index"]
        self._outs = [d["index"] for d in self._interp.get_output_details()]

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        self._interp.set_tensor(self._in, tensor)
        self._interp.invoke()
        return [self._interp.get_tensor(i) for i in self._outs]


def make_backend(kind: str, path: Path, *, providers: list[str] | None = None,
                 threads: int = 0) -> Backend:
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(path, providers=providers, threads=threads)
    if kind == "opencv":
        return OpenCVBackend(path, threads=threads)
    if kind == "tflite":
        return TFLiteBackend(path, threads=threads)
    raise ModelError(f"unknown backend {kind!r} (onnxruntime, opencv, tflite)")
