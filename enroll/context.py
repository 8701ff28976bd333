"""What every operation needs: the store, and the engine (loaded only when an op needs it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from facelink.errors import ConflictException, ResourceNotFoundException
from facelink.models.engine import FaceEngine
from facelink.models.manifest import Calibration, calibration_for

from .store import Collection, FaceRow, Store


@dataclass
class Context:
    store: Store
    engine_factory: Callable[[], FaceEngine]
    keep_thumbnails: bool = False
    models_dir: Path | None = None  # where an operator's re-fitted calibration may live
    similarity_threshold: float = 99.0  # the door's (matching.*): describe-collection states its risk
    max_stranger_rate: float = 1e-4
    extras: bool = False  # FaceLink-only members in responses (`facelink --facelink-extras`); never in serve
    _engine: FaceEngine | None = field(default=None, repr=False)

    @property
    def engine(self) -> FaceEngine:
        if self._engine is None:
            self._engine = self.engine_factory()
        return self._engine

    def collection(self, collection_id: str) -> Collection:
        found = self.store.get_collection(collection_id)
        if found is None:
            raise ResourceNotFoundException(f"collection {collection_id!r} does not exist")
        return found

    def collection_for_engine(self, collection_id: str) -> Collection:
        """The collection, refusing when its FaceModelVersion differs from the engine's."""
        coll = self.collection(collection_id)
        if coll.face_model_version != self.engine.model_version:
            raise ConflictException(
                f"collection {collection_id!r} holds FaceModelVersion {coll.face_model_version} "
                f"but the engine runs {self.engine.model_version}: embeddings are not comparable; "
                "re-index into a new collection or change models.embedder_* settings")
        return coll

    def lookup_faces(self, collection_id: str, face_ids: list[str]) -> tuple[list[FaceRow], list[dict]]:
        """The named faces that exist (in request order, once each), and a FACE_NOT_FOUND entry
        (Rekognition's Unsuccessful* shape) for each that does not."""
        found = {f.face_id: f for f in self.store.get_faces(collection_id, face_ids)}
        unique = list(dict.fromkeys(face_ids))
        return ([found[f] for f in unique if f in found],
                [{"FaceId": f, "Reasons": ["FACE_NOT_FOUND"]} for f in unique if f not in found])

    def calibration(self, coll: Collection) -> Calibration:
        if self._engine is not None and self._engine.model_version == coll.face_model_version:
            return self._engine.calibration
        return calibration_for(coll.face_model_version, self.models_dir)
