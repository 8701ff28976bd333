"""One immutable version of the door's gallery: the user-associated faces of the collection as
columns (row ids, ids, a float32 matrix and its int8 copy), searched by ``device/scan.py``.

A change never edits a gallery: :meth:`Gallery.changed` builds the next one aside (rows dropped
and added in both the float32 matrix and the int8 copy at once), so a reader always sees one
consistent version and a revoked face is gone from both copies in the same swap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from facelink.enroll.store import FaceColumns, FaceRow
from facelink.errors import StoreError
from facelink.models.embedder import EMBEDDING_DIM, not_embeddings

from . import scan

QUANTISED_FROM = 20_000  # rows from which search() scans the int8 copy (README, Performance)


@dataclass(frozen=True)
class Gallery:
    ids: np.ndarray  # (n,) int64 face row ids, ascending
    face_ids: np.ndarray  # (n,) object: FaceId
    external_image_ids: np.ndarray  # (n,) object: ExternalImageId or None
    user_ids: np.ndarray  # (n,) object: UserId
    matrix: np.ndarray  # (n, EMBEDDING_DIM) float32
    q8: np.ndarray  # (n, EMBEDDING_DIM) int8 copy (scan.quantise)
    residual: float  # an upper bound of every row's quantisation residual
    q8_norm: float  # an upper bound of every row's ||q8 / 127|| (scan.quantise)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> Gallery:
        return cls.of(np.zeros(0, np.int64), [], [], [], np.zeros((0, EMBEDDING_DIM), np.float32))

    @classmethod
    def of(cls, ids: np.ndarray, face_ids: Sequence[str], external_image_ids: Sequence[str | None],
           user_ids: Sequence[str | None], matrix: np.ndarray) -> Gallery:
        if matrix.ndim != 2 or matrix.shape[1] != EMBEDDING_DIM:
            raise StoreError(f"collection holds embeddings of shape {matrix.shape[1:]}, "
                             f"expected ({EMBEDDING_DIM},)")
        bad = not_embeddings(matrix)
        if len(bad):  # the store refuses them; a row altered in the file itself fails closed here
            raise StoreError(f"collection holds {len(bad)} rows that are not unit embeddings "
                             f"(first: face row {int(np.asarray(ids)[bad[0]])})")
        q8, residual, q8_norm = scan.quantise(matrix)
        return cls(np.asarray(ids, dtype=np.int64), _objects(face_ids), _objects(external_image_ids),
                   _objects(user_ids), np.ascontiguousarray(matrix, dtype=np.float32), q8, residual,
                   q8_norm)

    @classmethod
    def from_columns(cls, faces: FaceColumns) -> Gallery:
        return cls.of(faces.ids, faces.face_ids, faces.external_image_ids, faces.user_ids,
                      faces.embeddings)

    @classmethod
    def from_rows(cls, rows: Sequence[FaceRow]) -> Gallery:
        matrix = (np.stack([np.asarray(r.embedding, dtype=np.float32) for r in rows]) if rows
                  else np.zeros((0, EMBEDDING_DIM), np.float32))
        return cls.of(np.array([r.id for r in rows], dtype=np.int64), [r.face_id for r in rows],
                      [r.external_image_id for r in rows], [r.user_id for r in rows], matrix)

    def changed(self, dropped: Iterable[int], added: Sequence[FaceRow]) -> Gallery:
        """The next gallery: rows ``dropped`` (and any row re-added) removed, ``added`` inserted."""
        new = Gallery.from_rows(added)
        gone = np.array(sorted({*map(int, dropped), *new.ids.tolist()}), dtype=np.int64)
        keep = ~np.isin(self.ids, gone)
        ids = np.concatenate([self.ids[keep], new.ids])
        order = np.argsort(ids, kind="stable")

        def merged(old: np.ndarray, add: np.ndarray) -> np.ndarray:
            return np.concatenate([old[keep], add])[order]

        return Gallery(ids[order], merged(self.face_ids, new.face_ids),
                       merged(self.external_image_ids, new.external_image_ids),
                       merged(self.user_ids, new.user_ids), merged(self.matrix, new.matrix),
                       merged(self.q8, new.q8), max(self.residual, new.residual),
                       max(self.q8_norm, new.q8_norm))

    def search(self, query: np.ndarray, threads: int = 1,
               quantised_from: int = QUANTISED_FROM) -> tuple[int, float]:
        """The exact float32 top-1 (position, cosine): through the int8 copy from
        ``quantised_from`` rows on where the int8 kernel is built (same answer, see
        ``device/scan.py``)."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        return scan.top1(self.matrix, self.q8, self.residual, self.q8_norm, query, threads,
                         int8=len(self) >= quantised_from)

    def search_user(self, user_id: str, query: np.ndarray) -> tuple[int, float] | None:
        """The best of ``user_id``'s rows (position, cosine; scored like every search's final
        step), None when the user has no faces here."""
        rows = np.flatnonzero(self.user_ids == user_id)
        if not len(rows):
            return None
        query = np.ascontiguousarray(query, dtype=np.float32)
        scan.check_query(query)
        return scan.final_top1(self.matrix, query, rows)


def _objects(values: Sequence[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out
