"""Whole frames the way the door runs them: detect, then align and embed every face, one loop.

Contenders run interleaved in one process (each round times every contender on the same
frames, in a rotating order), so machine load hits them alike; the table gives medians and
each contender's time relative to FaceLink's as the median of per-round ratios.

- FaceLink default: ``FaceEngine.from_settings`` with the shipped settings (what the door runs,
  pose and quality included);
- FaceLink's previous default (SFace in OpenCV DNN, the int8bq file; YuNet unchanged): what
  the default embedder (onnxruntime, PRelu as depthwise convs) changed;
- OpenCV 5 ``FaceDetectorYN`` + ``FaceRecognizerSF`` on the same model files;
- face_recognition (dlib HOG detector, upsample 1, ResNet embedding) when it is installed,
  on fewer frames (it is an order of magnitude slower);
- FaceLink with SFace in OpenVINO (``sface_fp32.onnx``, the PRelu graph OpenVINO fuses itself;
  YuNet stays in onnxruntime, where it measured faster) when ``openvino`` is installed: another
  runtime on the same files, to see what it would gain. It is not a FaceLink dependency.

Frames: 640x480, one face (~160 px wide) and three faces (~100 px) cut from
../shared/faces/people photos. ``--stages`` adds per-stage medians (diagnosis only), and
``--pipelined`` the throughput of overlapping frame n+1's detection with frame n's embedding.

    python tools/bench_engine.py [--frames 200] [--threads 2] [--stages] [--pipelined]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from facelink.config import ModelSettings, load_settings
from facelink.models.aligner import align_face
from facelink.models.embedder import SFaceEmbedder
from facelink.models.engine import FaceEngine
from facelink.models.image import decode_image

FACES = Path(os.environ.get("FACELINK_TEST_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces"))
ONE_FACE = ["people/obama/1.jpg"]
PREVIOUS = "FaceLink, previous default (SFace in OpenCV DNN)"
THREE_FACES = ["people/biden/1.jpg", "people/kit_harington/1.jpg", "people/rose_leslie/1.jpg"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def compose(engine: FaceEngine, photos: list[str], face_px: int) -> np.ndarray:
    """A 640x480 frame of len(photos) side-by-side columns, each face about ``face_px`` wide."""
    col_w = 640 // len(photos)
    cols = []
    for rel in photos:
        img = decode_image(FACES / rel).pixels
        x, y, w, h = engine.detect(img)[0].detection.box
        scale = face_px / w
        cw, ch = col_w / scale, 480 / scale
        cx, cy = x + w / 2, y + h * 0.45
        x0, y0 = int(round(cx - cw / 2)), int(round(cy - ch / 2))
        pad = int(max(cw, ch))
        big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        crop = big[y0 + pad:y0 + pad + int(round(ch)), x0 + pad:x0 + pad + int(round(cw))]
        cols.append(cv2.resize(crop, (col_w, 480), interpolation=cv2.INTER_AREA))
    frame = np.hstack(cols)
    return cv2.resize(frame, (640, 480)) if frame.shape[1] != 640 else frame


def facelink_contender(engine: FaceEngine) -> Callable[[np.ndarray], int]:
    return lambda frame: len(engine.analyze(frame))


def previous_default(settings: ModelSettings) -> FaceEngine:
    """The engine as it was before the depthwise-PRelu SFace: SFace in OpenCV DNN."""
    return FaceEngine.from_settings(settings.model_copy(update={"embedder_backend": "opencv"}))


def opencv_contender(models: Path) -> Callable[[np.ndarray], int]:
    det = cv2.FaceDetectorYN.create(str(models / "yunet_2023mar_int8bq.onnx"), "", (640, 480), 0.6, 0.3)
    rec = cv2.FaceRecognizerSF.create(str(models / "sface_int8bq_pruned.onnx"), "")

    def run(frame: np.ndarray) -> int:
        det.setInputSize((frame.shape[1], frame.shape[0]))
        faces = det.detect(frame)[1]
        faces = [] if faces is None else faces
        for f in faces:
            rec.feature(rec.alignCrop(frame, f))
        return len(faces)

    return run


def face_recognition_contender() -> Callable[[np.ndarray], int] | None:
    try:
        import face_recognition
    except ImportError:
        return None

    def run(frame: np.ndarray) -> int:
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        boxes = face_recognition.face_locations(rgb, number_of_times_to_upsample=1, model="hog")
        return len(face_recognition.face_encodings(rgb, boxes))

    return run


class OpenVinoBackend:
    """An OpenVINO CPU model behind FaceLink's ``Backend`` interface (benchmark only): the
    same thread count, latency hint, fp32 (no bf16/fp16 down-conversion)."""

    def __init__(self, path: Path, threads: int, shape: tuple[int, ...]) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({model.inputs[0].get_any_name(): list(shape)})
        self._compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        self._request = self._compiled.create_infer_request()
        self.name = f"openvino {ov.__version__.split('-')[0]}"

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        out = self._request.infer({0: tensor})
        return [np.array(out[o]) for o in self._compiled.outputs]


def openvino_engine(engine: FaceEngine, models: Path, threads: int) -> tuple[FaceEngine, str] | None:
    """FaceLink's engine with SFace in OpenVINO (one face per run: the shape is fixed at 1), or
    None when openvino is not installed."""
    try:
        backend = OpenVinoBackend(models / "sface_fp32.onnx", threads, (1, 3, 112, 112))
    except ImportError:
        return None
    embedder = SFaceEmbedder(backend, batch=False)
    return FaceEngine(engine.detector, embedder, engine.model_version, engine.calibration), backend.name


def same_embeddings(a: FaceEngine, b: FaceEngine, frames: dict[str, np.ndarray]) -> float:
    """The smallest cosine between the two engines' embeddings of every face of ``frames``."""
    worst = 1.0
    for frame in frames.values():
        for x, y in zip(a.analyze(frame), b.analyze(frame)):
            worst = min(worst, float(x.embedding @ y.embedding))
    return worst


def interleaved(contenders: dict[str, Callable[[np.ndarray], int]], frames: dict[str, np.ndarray],
                rounds: dict[str, int], warmup: int = 5) -> tuple[dict, dict]:
    """times[contender][frame] (ms per round, None where a contender sat the round out) and faces found."""
    names = list(contenders)
    times = {c: {f: [] for f in frames} for c in names}
    found = {c: {f: contenders[c](frames[f]) for f in frames} for c in names}
    for _ in range(warmup):
        for c in names:
            for f in frames.values():
                contenders[c](f)
    total = max(rounds.values())
    for r in range(total):
        order = names[r % len(names):] + names[:r % len(names)]
        for c in order:
            for fname, frame in frames.items():
                if r >= rounds[c]:
                    times[c][fname].append(None)
                    continue
                t = time.perf_counter()
                contenders[c](frame)
                times[c][fname].append((time.perf_counter() - t) * 1000.0)
    return times, found


def median(values: list[float | None]) -> float:
    return statistics.median([v for v in values if v is not None])


def paired_ratio(a: list[float | None], b: list[float | None]) -> float:
    return statistics.median([x / y for x, y in zip(a, b) if x is not None and y is not None])


def stages(engine: FaceEngine, frames: dict[str, np.ndarray], repeats: int) -> list[str]:
    rows = []
    for fname, frame in frames.items():
        det, align, embed, quality = [], [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            dets = engine.detector.detect(frame)
            t1 = time.perf_counter()
            faces = engine.detect(frame)
            t2 = time.perf_counter()
            crops = [align_face(frame, f.detection.landmarks) for f in faces]
            t3 = time.perf_counter()
            engine.embedder.embed(crops)
            t4 = time.perf_counter()
            det.append((t1 - t0) * 1e3)
            quality.append(max(0.0, (t2 - t1) - (t1 - t0)) * 1e3)
            align.append((t3 - t2) * 1e3)
            embed.append((t4 - t3) * 1e3)
            assert len(dets) == len(faces)
        rows.append(f"| {fname} | {statistics.median(det):.1f} ms | {statistics.median(quality):.2f} ms | "
                    f"{statistics.median(align):.2f} ms | {statistics.median(embed):.1f} ms |")
    return rows


def pipelined(engine_factory: Callable[[int], FaceEngine], frame: np.ndarray, n: int,
              threads: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(frames/s, median per-frame latency in ms) of the sequential loop and of a 2-stage
    pipeline: detection of frame n+1 on one thread while frame n is embedded on another, each
    model with ``threads // 2`` inference threads. A frame's latency is from the start of its
    detection to the end of its embedding (queueing included)."""
    import queue
    import threading

    seq = engine_factory(threads)
    lat: list[float] = []
    t = time.perf_counter()
    for _ in range(n):
        t1 = time.perf_counter()
        seq.analyze(frame)
        lat.append((time.perf_counter() - t1) * 1e3)
    seq_result = (n / (time.perf_counter() - t), statistics.median(lat))
    half = max(1, threads // 2)
    det_engine, emb_engine = engine_factory(half), engine_factory(half)
    q: queue.Queue = queue.Queue(maxsize=1)

    def detect_stage() -> None:
        for _ in range(n):
            started = time.perf_counter()
            q.put((started, det_engine.detect(frame)))
        q.put(None)

    lat = []
    t = time.perf_counter()
    th = threading.Thread(target=detect_stage)
    th.start()
    while (item := q.get()) is not None:
        emb_engine.embed(frame, item[1])
        lat.append((time.perf_counter() - item[0]) * 1e3)
    th.join()
    return seq_result, (n / (time.perf_counter() - t), statistics.median(lat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200, help="timed frames per contender and frame kind")
    parser.add_argument("--face-recognition-frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", action="store_true", help="per-stage medians of FaceLink (diagnosis)")
    parser.add_argument("--pipelined", action="store_true", help="throughput with detection overlapped")
    args = parser.parse_args()
    settings = load_settings().models.model_copy(update={"threads": args.threads})
    models = Path(settings.models_dir)
    engine = FaceEngine.from_settings(settings)
    cv2.setNumThreads(args.threads)  # OpenCV's process-wide pool, for the OpenCV contender
    frames = {"1 face": compose(engine, ONE_FACE, 160), "3 faces": compose(engine, THREE_FACES, 100)}

    contenders = {
        "FaceLink (default)": facelink_contender(engine),
        "OpenCV 5 FaceDetectorYN + FaceRecognizerSF": opencv_contender(models),
        PREVIOUS: facelink_contender(previous_default(settings)),
    }
    rounds = dict.fromkeys(contenders, args.frames)
    fr = face_recognition_contender()
    if fr is not None:
        contenders["face_recognition 1.3 (dlib HOG + ResNet)"] = fr
        rounds["face_recognition 1.3 (dlib HOG + ResNet)"] = args.face_recognition_frames
    notes = []
    vino = openvino_engine(engine, models, args.threads)
    if vino is not None:
        name = f"FaceLink, SFace in OpenVINO ({vino[1]}, not a dependency)"
        contenders[name] = facelink_contender(vino[0])
        rounds[name] = args.frames
        notes.append(f"{name}: embeddings' smallest cosine to the default engine's "
                     f"{same_embeddings(engine, vino[0], frames):.6f}")
    load_before = load_text()
    t0 = time.perf_counter()
    times, found = interleaved(contenders, frames, rounds)
    elapsed = time.perf_counter() - t0
    load_after = load_text()

    base = "FaceLink (default)"
    print(f"Whole frames at 640x480 (detect, align, embed every face), {args.threads} threads; "
          f"{machine()}; onnxruntime {__import__('onnxruntime').__version__}, OpenCV {cv2.__version__}; "
          f"{dt.date.today().isoformat()}; load average {load_before} before, {load_after} after "
          f"(1/5/15 min; {elapsed:.0f} s run)\n")
    print("| contender | frames | 1 face | 3 faces | time / FaceLink's, 1 face | 3 faces |")
    print("|---|---|---|---|---|---|")
    for c in contenders:
        cells = [f"{median(times[c][f]):.1f} ms" for f in frames]
        ratios = [f"{paired_ratio(times[c][f], times[base][f]):.2f}" for f in frames]
        wrong = [f"{f}: found {found[c][f]}" for f, want in zip(frames, (1, 3)) if found[c][f] != want]
        name = f"**{c}**" if c == base else c
        print(f"| {name} | {rounds[c]} | {cells[0]} | {cells[1]} | {ratios[0]} | {ratios[1]} |"
              + (f" ({'; '.join(wrong)})" if wrong else ""))
    print("\nmedians; ratios are medians of per-round ratios (same round, same frame), > 1 = slower "
          "than FaceLink.")
    for note in notes:
        print(note)
    if args.stages:
        print("\nFaceLink stages (diagnosis; medians of 50):\n")
        print("| frame | YuNet (resize, run, decode) | pose + quality | align (all faces) | embed (all faces) |")
        print("|---|---|---|---|---|")
        print("\n".join(stages(engine, frames, 50)))
    if args.pipelined:
        def factory(threads: int) -> FaceEngine:
            return FaceEngine.from_settings(settings.model_copy(update={"threads": threads}))

        (seq_fps, seq_ms), (pipe_fps, pipe_ms) = pipelined(factory, frames["1 face"], args.frames,
                                                           args.threads)
        print(f"\nThroughput vs latency, 1 face, {args.frames} frames each (load average {load_text()}):\n")
        print("| loop | frames/s (throughput) | per-frame latency, median |")
        print("|---|---|---|")
        print(f"| sequential (detect, embed), {args.threads} threads per model | {seq_fps:.1f} | {seq_ms:.1f} ms |")
        print(f"| pipelined: detect frame n+1 while embedding frame n, {max(1, args.threads // 2)} "
              f"thread per model | {pipe_fps:.1f} | {pipe_ms:.1f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
