"""DetectFaces and CompareFaces: the engine-level operations, in Rekognition's shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from facelink.errors import InvalidParameterException

from .engine import AnalyzedFace, FaceEngine
from .image import ImageInput, decode_image
from .shapes import bounding_box_only, face_detail


def detect_faces(engine: FaceEngine, image: ImageInput) -> dict[str, Any]:
    """DetectFaces with what FaceLink measures (the same for any Attributes: see face_detail)."""
    img = decode_image(image)
    faces = engine.detect(img.pixels)
    out: dict[str, Any] = {"FaceDetails": [face_detail(f, img.width, img.height) for f in faces]}
    if img.orientation_correction:
        out["OrientationCorrection"] = img.orientation_correction
    return out


def compare_faces(engine: FaceEngine, source: ImageInput, target: ImageInput,
                  similarity_threshold: float = 80.0,
                  reject: Callable[[AnalyzedFace], list[str]] | None = None) -> dict[str, Any]:
    """The source image's largest face against every face of the target image. ``reject``
    (QualityFilter) names why a face is filtered out; filtered target faces are not compared.
    No usable face in the source or in the target is InvalidParameterException (Rekognition)."""
    if not 0.0 <= similarity_threshold <= 100.0:
        raise InvalidParameterException("SimilarityThreshold must be between 0 and 100")
    src, tgt = decode_image(source), decode_image(target)
    src_faces = engine.analyze(src.pixels, max_faces=1)
    if not src_faces:
        raise InvalidParameterException("no face found in the source image")
    if reject is not None and reject(src_faces[0]):
        raise InvalidParameterException("the source image's face does not pass QualityFilter: "
                                        + ", ".join(reject(src_faces[0])))
    tgt_faces = [f for f in engine.analyze(tgt.pixels) if reject is None or not reject(f)]
    if not tgt_faces:
        raise InvalidParameterException("no face found in the target image")
    out: dict[str, Any] = {
        "SourceImageFace": bounding_box_only(src_faces[0], src.width, src.height),
        "FaceMatches": [],
        "UnmatchedFaces": [],
    }
    cosines = np.stack([f.embedding for f in tgt_faces]) @ src_faces[0].embedding
    sims = np.atleast_1d(engine.similarity(cosines))
    for face, sim in sorted(zip(tgt_faces, sims), key=lambda t: -t[1]):
        detail = face_detail(face, tgt.width, tgt.height)
        if sim >= similarity_threshold:
            out["FaceMatches"].append({"Similarity": round(float(sim), 4), "Face": detail})
        else:
            out["UnmatchedFaces"].append(detail)
    if src.orientation_correction:
        out["SourceImageOrientationCorrection"] = src.orientation_correction
    if tgt.orientation_correction:
        out["TargetImageOrientationCorrection"] = tgt.orientation_correction
    return out
