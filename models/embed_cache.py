"""Embeddings for evaluation, computed once: the door's full pipeline per photo, cached.

The cache is keyed by the engine configuration (FaceModelVersion, runtimes, model files,
detector settings), the image condition (clean, or a simulated door condition) and each file's
SHA-256, so a re-run only scores. It lives in the user's data directory
(``$XDG_DATA_HOME/facelink/eval-cache``, 0700; files 0600), never in the repository: embeddings
are biometric templates.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelink.config.settings import data_dir
from facelink.errors import FaceLinkError
from facelink.models.embedder import EMBEDDING_DIM
from facelink.models.engine import FaceEngine
from facelink.models.image import decode_image

Transform = Callable[[np.ndarray, float], np.ndarray]  # (BGR pixels, clean face width) -> pixels
SAVE_EVERY = 400  # photos between checkpoints: an interrupted run resumes


def default_cache_dir() -> Path:
    return data_dir() / "eval-cache"


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Embedded:
    """Per image: its largest face's embedding (NaN row: no face or unreadable) and face width."""

    vectors: np.ndarray  # (N, 128) float32
    face_width: np.ndarray  # (N,) float32, 0 where no face

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.vectors[:, 0])


class EmbeddingCache:
    def __init__(self, key: dict[str, object], cache_dir: Path | None = None) -> None:
        self.key = json.dumps(key, sort_keys=True)
        self.dir = Path(cache_dir or default_cache_dir())
        self.path = self.dir / f"{hashlib.sha256(self.key.encode()).hexdigest()[:24]}.npz"
        self.rows: dict[str, tuple[np.ndarray, float]] = {}
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if str(z["key"]) == self.key:
                        for d, v, w in zip(z["digests"], z["vectors"], z["face_width"]):
                            self.rows[str(d)] = (v, float(w))
            except (OSError, ValueError, KeyError):
                self.rows = {}  # a damaged cache is recomputed, never trusted

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        digests = list(self.rows)
        vectors = np.stack([self.rows[d][0] for d in digests]) if digests else np.zeros((0, EMBEDDING_DIM))
        widths = np.array([self.rows[d][1] for d in digests], dtype=np.float32)
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")  # created 0600
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, key=np.array(self.key), digests=np.array(digests, dtype="U64"),
                         vectors=vectors.astype(np.float32), face_width=widths)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def embed_one(engine: FaceEngine, path: Path, transform: Transform | None, clean_width: float
              ) -> tuple[np.ndarray, float]:
    nan = np.full(EMBEDDING_DIM, np.nan, dtype=np.float32)
    try:
        pixels = decode_image(path).pixels
        if transform is not None:
            pixels = transform(pixels, clean_width)
        faces = engine.analyze(pixels, max_faces=1)
    except FaceLinkError:
        return nan, 0.0
    if not faces or faces[0].embedding is None:
        return nan, 0.0
    return faces[0].embedding.astype(np.float32), float(faces[0].detection.box[2])


def embed_all(engine_factory: Callable[[], FaceEngine], cache: EmbeddingCache, images: Sequence[Path],
              digests: Sequence[str], *, transform: Transform | None = None,
              clean_widths: np.ndarray | None = None, workers: int = 1,
              progress: Callable[[int], None] | None = None) -> Embedded:
    """Every image through the pipeline, once per cache key; ``progress(n)`` after each photo."""
    todo = [i for i, d in enumerate(digests) if d not in cache.rows]
    if progress is not None and len(images) > len(todo):
        progress(len(images) - len(todo))
    local = threading.local()
    lock = threading.Lock()

    def work(i: int) -> None:
        if not hasattr(local, "engine"):
            local.engine = engine_factory()
        width = float(clean_widths[i]) if clean_widths is not None else 0.0
        row = embed_one(local.engine, images[i], transform, width)
        with lock:
            cache.rows[digests[i]] = row
            if len(cache.rows) % SAVE_EVERY == 0:
                cache.save()
        if progress is not None:
            progress(1)

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(work, todo):
                pass
        cache.save()
    vectors = np.stack([cache.rows[d][0] for d in digests]) if digests else np.zeros((0, EMBEDDING_DIM))
    widths = np.array([cache.rows[d][1] for d in digests], dtype=np.float32)
    return Embedded(vectors.astype(np.float32), widths)


def engine_key(ms, condition: str = "clean") -> dict[str, object]:
    """What decides an embedding: FaceModelVersion, runtimes and files, detector settings, the
    image condition. (The OpenCV reference shares the int8bq FaceModelVersion but not the
    detector runtime, so the runtimes are part of the key.)"""
    from facelink.models.engine import choose

    c = choose(ms.detector_backend, ms.embedder_backend, ms.embedder_precision, list(ms.providers))
    return {"face_model_version": c.model_version, "detector": [c.detector_backend, c.detector_file],
            "embedder": [c.embedder_backend, c.embedder_file], "detect_max_side": ms.detect_max_side,
            "detect_score_threshold": ms.detect_score_threshold, "condition": condition}
