"""The face engine: detector -> quality/pose -> aligner -> embedder, shared by door and desk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .aligner import align_face
from .detector import Detection, YuNetDetector
from .embedder import SFaceEmbedder
from .manifest import Calibration, calibration_for, verify_model
from .quality import Pose, Quality, estimate_pose, measure_quality
from .runtime import make_backend
from .similarity import cosine_to_similarity, similarity_to_cosine

log = logging.getLogger(__name__)

MODEL_FAMILY = "yunet-2023mar+sface-2021dec"


@dataclass(frozen=True)
class AnalyzedFace:
    detection: Detection
    pose: Pose
    quality: Quality
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class EngineChoice:
    """Which files and runtimes an engine uses; decides the FaceModelVersion."""

    detector_backend: str
    detector_file: str
    embedder_backend: str
    embedder_file: str
    precision_tag: str  # int8bq (exact shipped weights) or int8qdq (re-quantized)

    @property
    def model_version(self) -> str:
        return f"{MODEL_FAMILY}/{self.precision_tag}"


def choose(detector_backend: str, embedder_backend: str, precision: str,
           providers: list[str]) -> EngineChoice:
    """Resolve config to model files. ``auto`` picks the fastest measured path (README,
    Performance): onnxruntime with SFace's PRelus as depthwise convs (``sface_fp32_dw.onnx``)."""
    if embedder_backend == "auto":
        embedder_backend = "onnxruntime"
    det_file = "yunet_fp32.onnx" if detector_backend == "onnxruntime" else "yunet_2023mar_int8bq.onnx"
    if embedder_backend == "opencv":
        return EngineChoice(detector_backend, det_file, "opencv", "sface_int8bq_pruned.onnx", "int8bq")
    if precision == "int8":
        return EngineChoice(detector_backend, det_file, "onnxruntime", "sface_int8_qdq.onnx", "int8qdq")
    return EngineChoice(detector_backend, det_file, "onnxruntime", "sface_fp32_dw.onnx", "int8bq")


class FaceEngine:
    def __init__(self, detector: YuNetDetector, embedder: SFaceEmbedder, model_version: str,
                 calibration: Calibration) -> None:
        self.detector = detector
        self.embedder = embedder
        self.model_version = model_version
        self.calibration = calibration

    @classmethod
    def from_settings(cls, ms) -> FaceEngine:
        """Build from a ``ModelSettings``; a missing model is a ModelError naming the fix."""
        choice = choose(ms.detector_backend, ms.embedder_backend, ms.embedder_precision,
                        list(ms.providers))
        models_dir = Path(ms.models_dir)
        for name in (choice.detector_file, choice.embedder_file):  # a swapped model: wrong identities
            verify_model(models_dir, name)
        det_backend = make_backend(choice.detector_backend, models_dir / choice.detector_file,
                                   providers=list(ms.providers), threads=ms.threads)
        emb_backend = make_backend(choice.embedder_backend, models_dir / choice.embedder_file,
                                   providers=list(ms.providers), threads=ms.threads)
        detector = YuNetDetector(det_backend, max_side=ms.detect_max_side,
                                 score_threshold=ms.detect_score_threshold)
        embedder = SFaceEmbedder(emb_backend, batch=choice.embedder_backend == "onnxruntime")
        log.info("engine: detector %s (%s), embedder %s (%s), FaceModelVersion %s",
                 det_backend.name, choice.detector_file, emb_backend.name, choice.embedder_file,
                 choice.model_version)
        calibration = calibration_for(choice.model_version, models_dir)
        return cls(detector, embedder, choice.model_version, calibration)

    def detect(self, bgr: np.ndarray) -> list[AnalyzedFace]:
        """Faces largest first, with pose and quality, no embeddings."""
        return [AnalyzedFace(d, estimate_pose(d.landmarks), measure_quality(bgr, d.box))
                for d in self.detector.detect(bgr)]

    def embed(self, bgr: np.ndarray, faces: list[AnalyzedFace]) -> list[AnalyzedFace]:
        if not faces:
            return []
        vectors = self.embedder.embed([align_face(bgr, f.detection.landmarks) for f in faces])
        return [AnalyzedFace(f.detection, f.pose, f.quality, v) for f, v in zip(faces, vectors)]

    def analyze(self, bgr: np.ndarray, max_faces: int | None = None) -> list[AnalyzedFace]:
        faces = self.detect(bgr)
        return self.embed(bgr, faces[:max_faces] if max_faces else faces)

    def similarity(self, cosine: float | np.ndarray) -> float | np.ndarray:
        return cosine_to_similarity(cosine, self.calibration)

    def cosine_for(self, similarity: float) -> float:
        """The cosine a Similarity level stands for under this FaceModelVersion's calibration."""
        return similarity_to_cosine(similarity, self.calibration)
