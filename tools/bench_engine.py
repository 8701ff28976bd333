"""Per-stage median latency of the face engine, every backend x precision in one run.

Stages: detect (YuNet on a 640x480 frame), align (similarity warp to 112x112), embed (SFace,
one face). Configurations: the OpenCV reference (cv2.FaceDetectorYN + cv2.FaceRecognizerSF on
the shipped int8bq files), onnxruntime fp32, onnxruntime int8 (QDQ), and FaceLink's default
(`embedder_backend = "auto"` on a CPU: YuNet in onnxruntime, SFace in OpenCV DNN).

    python tools/bench_engine.py [--repeats 50] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from facelink.config import load_settings
from facelink.models.aligner import align_face
from facelink.models.detector import YuNetDetector
from facelink.models.embedder import SFaceEmbedder
from facelink.models.provision import provision
from facelink.models.runtime import OnnxRuntimeBackend, OpenCVBackend


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "faces"


def reference_agreement(models: Path, detector: YuNetDetector, embedders: dict, ref_rec) -> dict:
    """Cosine between each configuration's embedding and the OpenCV reference, same aligned crops."""
    paths = sorted((models / "samples").glob("*.jpg"))
    if SHARED.is_dir():
        paths += sorted(p for p in (SHARED / "people").rglob("*") if p.suffix in (".jpg", ".png"))
    crops = []
    for p in paths:
        img = cv2.imread(str(p))
        crops += [align_face(img, d.landmarks) for d in detector.detect(img)[:1]]
    ref = np.stack([ref_rec.feature(c).ravel() for c in crops])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    out = {}
    for name, emb in embedders.items():
        cos = (np.concatenate([emb.embed([c]) for c in crops]) * ref).sum(axis=1)
        out[name] = (float(cos.min()), float(cos.mean()))
    return {"faces": len(crops), "cosine": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    models = provision(load_settings().models.models_dir).models_dir
    frame = cv2.resize(cv2.imread(str(models / "samples" / "single_face.jpg")), (640, 480))
    small = cv2.resize(frame, (320, 240))

    ref_det = cv2.FaceDetectorYN.create(str(models / "yunet_2023mar_int8bq.onnx"), "", (640, 480), 0.6, 0.3)
    ref_rec = cv2.FaceRecognizerSF.create(str(models / "sface_int8bq_pruned.onnx"), "")
    face = ref_det.detect(frame)[1][0]
    ref_crop = ref_rec.alignCrop(frame, face)

    ort_det = YuNetDetector(OnnxRuntimeBackend(models / "yunet_fp32.onnx", threads=args.threads))
    landmarks = ort_det.detect(frame)[0].landmarks
    crop = align_face(frame, landmarks)
    embedders = {
        "onnxruntime fp32": SFaceEmbedder(OnnxRuntimeBackend(models / "sface_fp32.onnx", threads=args.threads)),
        "onnxruntime int8": SFaceEmbedder(OnnxRuntimeBackend(models / "sface_int8_qdq.onnx", threads=args.threads)),
        "default (auto)": SFaceEmbedder(OpenCVBackend(models / "sface_int8bq_pruned.onnx", threads=args.threads),
                                        batch=False),
    }
    rows = []
    ref_detect = median_ms(lambda: ref_det.detect(frame), args.repeats)
    ref_det.setInputSize((320, 240))
    ref_detect_small = median_ms(lambda: ref_det.detect(small), args.repeats)
    rows.append({"config": "OpenCV reference (int8bq)", "detect_640x480_ms": ref_detect,
                 "detect_320x240_ms": ref_detect_small,
                 "align_ms": median_ms(lambda: ref_rec.alignCrop(frame, face), args.repeats),
                 "embed_ms": median_ms(lambda: ref_rec.feature(ref_crop), args.repeats)})
    ort_detect = median_ms(lambda: ort_det.detect(frame), args.repeats)
    ort_detect_small = median_ms(lambda: ort_det.detect(small), args.repeats)
    align = median_ms(lambda: align_face(frame, landmarks), args.repeats)
    for name, emb in embedders.items():
        rows.append({"config": name, "detect_640x480_ms": ort_detect, "detect_320x240_ms": ort_detect_small,
                     "align_ms": align, "embed_ms": median_ms(lambda e=emb: e.embed([crop]), args.repeats)})
    for r in rows:
        r["detect_align_embed_640x480_ms"] = r["detect_640x480_ms"] + r["align_ms"] + r["embed_ms"]
    agreement = reference_agreement(models, ort_det, embedders, ref_rec)
    meta = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
            "opencv": cv2.__version__, "onnxruntime": __import__("onnxruntime").__version__,
            "repeats": args.repeats}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "agreement": agreement}, indent=2))
        return 0
    print(f"median latency, {args.threads} threads, {args.repeats} runs; OpenCV {meta['opencv']}, "
          f"onnxruntime {meta['onnxruntime']}")
    print("| configuration | detect 640x480 | detect 320x240 | align | embed (1 face) | detect+align+embed 640x480 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['detect_640x480_ms']:.1f} ms | {r['detect_320x240_ms']:.1f} ms | "
              f"{r['align_ms']:.2f} ms | {r['embed_ms']:.1f} ms | {r['detect_align_embed_640x480_ms']:.1f} ms |")
    print(f"\nembedding agreement with the OpenCV reference on {agreement['faces']} real faces (same crops):")
    print("| configuration | min cosine | mean cosine |")
    print("|---|---|---|")
    for name, (lo, mean) in agreement["cosine"].items():
        print(f"| {name} | {lo:.4f} | {mean:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
