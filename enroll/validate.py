"""Parameter validation with Rekognition's rules; failures raise InvalidParameterException."""

from __future__ import annotations

import base64
import json
import re

from facelink.errors import InvalidPaginationTokenException, InvalidParameterException

# Patterns from Rekognition's service model, always applied with fullmatch (``$`` would also
# match before a trailing newline).
COLLECTION_ID = re.compile(r"[a-zA-Z0-9_.\-]{1,255}")
EXTERNAL_IMAGE_ID = re.compile(r"[a-zA-Z0-9_.\-:]{1,255}")
USER_ID = re.compile(r"[a-zA-Z0-9_.\-:]{1,128}")
FACE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CLIENT_REQUEST_TOKEN = re.compile(r"[a-zA-Z0-9\-_]{1,64}")


def whole(pattern: re.Pattern[str]) -> str:
    """``pattern`` anchored at both ends, for pydantic's ``Field(pattern=...)``, which searches
    (an unanchored pattern would accept any string that merely contains a match). pydantic's
    Rust regex ``$`` is the end of the text, not before a trailing newline."""
    return rf"^(?:{pattern.pattern})$"


def collection_id(value: str) -> str:
    if not isinstance(value, str) or not COLLECTION_ID.fullmatch(value):
        raise InvalidParameterException(
            f"CollectionId {value!r} must match [a-zA-Z0-9_.\\-]+ and be 1-255 characters")
    return value


def external_image_id(value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not EXTERNAL_IMAGE_ID.fullmatch(value)):
        raise InvalidParameterException(
            f"ExternalImageId {value!r} must match [a-zA-Z0-9_.\\-:]+ and be 1-255 characters")
    return value


def user_id(value: str) -> str:
    if not isinstance(value, str) or not USER_ID.fullmatch(value):
        raise InvalidParameterException(
            f"UserId {value!r} must match [a-zA-Z0-9_.\\-:]+ and be 1-128 characters")
    return value


def face_id(value: str) -> str:
    if not isinstance(value, str) or not FACE_ID.fullmatch(value):
        raise InvalidParameterException(f"FaceId {value!r} is not a lower-case UUID")
    return value


def client_request_token(value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not CLIENT_REQUEST_TOKEN.fullmatch(value)):
        raise InvalidParameterException(
            f"ClientRequestToken {value!r} must match [a-zA-Z0-9-_]+ and be 1-64 characters")
    return value


def face_ids(values: list[str], *, max_len: int = 4096) -> list[str]:
    if not isinstance(values, list) or not values:
        raise InvalidParameterException("FaceIds must name at least one face")
    if len(values) > max_len:
        raise InvalidParameterException(f"at most {max_len} FaceIds per request")
    return [face_id(v) for v in values]


def int_range(name: str, value: int, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidParameterException(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def float_range(name: str, value: float, lo: float, hi: float) -> float:
    # a JSON string ("50") or boolean is not a number, though float() would take it
    if isinstance(value, (bool, str, bytes, bytearray)):
        raise InvalidParameterException(f"{name} must be a number, got {type(value).__name__}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of 309+ digits
        raise InvalidParameterException(f"{name} must be a number between {lo} and {hi}") from None
    if not lo <= v <= hi:
        raise InvalidParameterException(f"{name} must be between {lo} and {hi}, got {value!r}")
    return v


def choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidParameterException(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def encode_token(position: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": position}).encode()).decode()


def decode_token(token: str | None, kind: type) -> str | int | None:
    if token is None:
        return None
    if not isinstance(token, str) or len(token) > 255:
        raise InvalidPaginationTokenException("NextToken is not valid")
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise InvalidPaginationTokenException("NextToken is not valid") from None
    if not isinstance(value, kind) or isinstance(value, bool) or (
            kind is int and not 0 <= value < 2**63):  # a row id: what SQLite's INTEGER holds
        raise InvalidPaginationTokenException("NextToken is not valid")
    return value


ATTRIBUTES = ("DEFAULT", "ALL", "AGE_RANGE", "BEARD", "EMOTIONS", "EYE_DIRECTION", "EYEGLASSES",
              "EYES_OPEN", "GENDER", "MOUTH_OPEN", "MUSTACHE", "FACE_OCCLUDED", "SMILE", "SUNGLASSES")


def attributes(name: str, values: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """DetectionAttributes / Attributes: a list of the model's Attribute values. FaceLink
    measures none beyond DEFAULT's, so the others are accepted and omitted from the output."""
    if values is None:
        return ["DEFAULT"]
    listed = [values] if isinstance(values, str) else values
    if not isinstance(listed, (list, tuple)):
        raise InvalidParameterException(f"{name} must be a list of {', '.join(ATTRIBUTES)}")
    return [choice(name, v, ATTRIBUTES) for v in listed]


def max_results(value: int | None, default: int, hi: int) -> int:
    """PageSize (0-``hi``): 0 or absent means the default page size, as in Rekognition."""
    if value is None:
        return default
    return int_range("MaxResults", value, 0, hi) or default
