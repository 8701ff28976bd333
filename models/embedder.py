"""SFace embedder: aligned 112x112 BGR crops -> L2-normalised 128-d float32 vectors."""

from __future__ import annotations

import numpy as np

from .runtime import Backend

EMBEDDING_DIM = 128


def to_tensor(crops: list[np.ndarray]) -> np.ndarray:
    """SFace wants RGB, 0..255 floats, NCHW (normalisation is inside the graph)."""
    batch = np.stack([c[:, :, ::-1] for c in crops]).astype(np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class SFaceEmbedder:
    def __init__(self, backend: Backend, *, batch: bool = True) -> None:
        self.backend = backend
        self.batch = batch  # the converted models take any batch size; the reference does not

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        if self.batch:
            out = self.backend.run(to_tensor(crops))[0]
        else:
            out = np.concatenate([self.backend.run(to_tensor([c]))[0] for c in crops])
        return l2_normalise(out.reshape(len(crops), -1))
