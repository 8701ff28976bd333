"""Rekognition's Image argument and the engine-only operations (DetectFaces, CompareFaces) with
Rekognition's parameter rules: one implementation for the CLI and `facelink serve`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from facelink.errors import InvalidParameterException, InvalidS3ObjectException
from facelink.models import operations
from facelink.models.engine import FaceEngine
from facelink.models.image import ImageInput

from . import validate
from .quality_filter import QUALITY_FILTERS, rejection_reasons

S3_UNSUPPORTED = ("Unable to get object metadata from S3: FaceLink runs offline and reads no S3 "
                  "objects; send the image as Image.Bytes")


def image_from_json(image: Any, *, base64_bytes: bool) -> bytes:
    """The bytes of a Rekognition ``Image`` object: ``{"Bytes": ...}`` (base64 text when
    ``base64_bytes``, as on the wire and in the CLI's JSON form) or ``{"S3Object": ...}``, which
    is InvalidS3ObjectException: an offline appliance has no S3."""
    if not isinstance(image, dict) or len(image) != 1 or not {"Bytes", "S3Object"} & image.keys():
        raise InvalidParameterException("Image must be an object with exactly one of Bytes or S3Object")
    if "S3Object" in image:
        raise InvalidS3ObjectException(S3_UNSUPPORTED)
    raw = image["Bytes"]
    if not base64_bytes:
        if not isinstance(raw, (bytes, bytearray)):
            raise InvalidParameterException("Image.Bytes must be bytes")
        return bytes(raw)
    if not isinstance(raw, str):
        raise InvalidParameterException("Image.Bytes must be base64 text")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterException("Image.Bytes is not valid base64") from None


def detect_faces(engine: FaceEngine, image: ImageInput, attributes: list[str] | str | None = None) -> dict[str, Any]:
    """DetectFaces. Attributes beyond DEFAULT's are accepted and omitted (FaceLink has no model
    for age, emotions, glasses...: README "Using it at the security desk")."""
    validate.attributes("Attributes", attributes)
    return operations.detect_faces(engine, image)


def compare_faces(engine: FaceEngine, source: ImageInput, target: ImageInput, similarity_threshold: float = 80.0,
                  quality_filter: str = "NONE") -> dict[str, Any]:
    """CompareFaces; QualityFilter (default NONE) drops target faces that fail it, and a source
    face that fails it is InvalidParameterException."""
    threshold = validate.float_range("SimilarityThreshold", similarity_threshold, 0, 100)
    level = validate.choice("QualityFilter", quality_filter, QUALITY_FILTERS)
    reject = None if level == "NONE" else (lambda face: rejection_reasons(face, level))
    return operations.compare_faces(engine, source, target, threshold, reject)
