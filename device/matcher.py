"""The door's in-memory user index, kept in sync with the collection database.

Faces are loaded once from the plain ``faces.embedding`` BLOBs, then only the changes the
enrollment desk appends to the ``changes`` table are applied (new, deleted, re-associated
faces), so enrollment takes effect within ``reload_interval_s`` without a restart. Matching is
a numpy matrix-vector product (128-d): README "Search speed" has the measurements.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from facelink.enroll.store import FaceRow, Store
from facelink.errors import ConflictException, ResourceNotFoundException
from facelink.models.embedder import EMBEDDING_DIM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    user_id: str
    face_id: str
    external_image_id: str | None
    cosine: float


class UserIndex:
    def __init__(self, store: Store, collection_id: str, model_version: str) -> None:
        self.store = store
        self.collection_id = collection_id
        self.model_version = model_version
        self._rows: dict[int, FaceRow] = {}
        self._matrix = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        self._meta: list[FaceRow] = []
        self._seq = 0
        self._last_poll = 0.0

    def __len__(self) -> int:
        return len(self._meta)

    def load(self) -> None:
        self._rows = {}  # nothing is grantable until the collection has been read successfully
        self._rebuild()
        coll = self.store.get_collection(self.collection_id)
        if coll is None:
            raise ResourceNotFoundException(f"collection {self.collection_id!r} does not exist: "
                                            "create it and enroll faces with `facelink`")
        if coll.face_model_version != self.model_version:
            raise ConflictException(f"collection {self.collection_id!r} holds FaceModelVersion "
                                    f"{coll.face_model_version}, the engine runs {self.model_version}")
        self._seq = self.store.last_change()
        _, rows = self.store.all_vectors(self.collection_id)
        self._rows = {r.id: r for r in rows if r.user_id is not None}
        self._rebuild()
        log.info("user index: %d faces of %d users", len(self._meta),
                 len({r.user_id for r in self._meta}))

    def _rebuild(self) -> None:
        self._meta = list(self._rows.values())
        self._matrix = (np.stack([r.embedding for r in self._meta]) if self._meta
                        else np.zeros((0, EMBEDDING_DIM), dtype=np.float32))

    def refresh(self, interval_s: float) -> bool:
        """Apply the desk's changes if ``interval_s`` has passed; True when anything changed."""
        now = time.monotonic()
        if now - self._last_poll < interval_s:
            return False
        self._last_poll = now
        changes = self.store.changes_since(self._seq, self.collection_id)
        if not changes:
            return False
        self._seq = changes[-1][0]
        if any(op == "reset" for _, _, op in changes):
            self.load()
            return True
        touched = sorted({row for _, row, _ in changes})
        for row in touched:
            self._rows.pop(row, None)
        for face in self.store.faces_by_rows(touched):
            if face.collection_id == self.collection_id and face.user_id is not None:
                self._rows[face.id] = face
        self._rebuild()
        log.info("user index updated: %d changes, %d faces", len(changes), len(self._meta))
        return True

    def best(self, embedding: np.ndarray) -> Match | None:
        """The best-matching user (best of the user's faces), or None when nobody is enrolled."""
        if not self._meta:
            return None
        scores = self._matrix @ embedding.astype(np.float32)
        i = int(np.argmax(scores))
        r = self._meta[i]
        return Match(r.user_id, r.face_id, r.external_image_id, float(scores[i]))
