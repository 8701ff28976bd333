"""SFace embedder: aligned 112x112 BGR crops -> L2-normalised 128-d float32 vectors."""

from __future__ import annotations

import numpy as np

from .runtime import Backend

EMBEDDING_DIM = 128
UNIT_TOLERANCE = 1e-3  # | ||v|| - 1 | allowed of a stored embedding (float32 rounding is ~1e-7)


def not_embeddings(matrix: np.ndarray) -> np.ndarray:
    """Positions of the rows of ``matrix`` (n, EMBEDDING_DIM) that are not embeddings: a value
    not finite, or a length not 1. Search scores are dot products: a row twice as long scores
    twice as high, so a long row from an altered file would match strangers (checked wherever
    embeddings enter: export files, change sets, the store, the door's gallery)."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] != EMBEDDING_DIM:
        raise ValueError(f"embeddings of shape {matrix.shape[1:]}, expected ({EMBEDDING_DIM},)")
    bad = []
    for start in range(0, len(matrix), 16_384):  # in blocks: no float copy of a large gallery
        rows = matrix[start:start + 16_384].astype(np.float32, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):  # too long to square: inf, refused
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        bad.append(start + np.flatnonzero(~(np.abs(norms - 1.0) <= UNIT_TOLERANCE)))  # NaN, inf too
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


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
