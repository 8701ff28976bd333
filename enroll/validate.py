"""Parameter validation with Rekognition's rules; failures raise InvalidParameterException."""

from __future__ import annotations

import base64
import json
import re
import uuid

from facelink.errors import InvalidPaginationTokenException, InvalidParameterException

COLLECTION_ID = re.compile(r"^[a-zA-Z0-9_.\-]{1,255}$")
EXTERNAL_IMAGE_ID = re.compile(r"^[a-zA-Z0-9_.\-:]{1,255}$")
USER_ID = re.compile(r"^[a-zA-Z0-9_.\-:]{1,128}$")


def collection_id(value: str) -> str:
    if not isinstance(value, str) or not COLLECTION_ID.match(value):
        raise InvalidParameterException(
            f"CollectionId {value!r} must match [a-zA-Z0-9_.\\-]+ and be 1-255 characters")
    return value


def external_image_id(value: str | None) -> str | None:
    if value is not None and not EXTERNAL_IMAGE_ID.match(value):
        raise InvalidParameterException(
            f"ExternalImageId {value!r} must match [a-zA-Z0-9_.\\-:]+ and be 1-255 characters")
    return value


def user_id(value: str) -> str:
    if not isinstance(value, str) or not USER_ID.match(value):
        raise InvalidParameterException(
            f"UserId {value!r} must match [a-zA-Z0-9_.\\-:]+ and be 1-128 characters")
    return value


def face_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidParameterException(f"FaceId {value!r} is not a UUID") from None


def face_ids(values: list[str], *, max_len: int = 4096) -> list[str]:
    if not values:
        raise InvalidParameterException("FaceIds must name at least one face")
    if len(values) > max_len:
        raise InvalidParameterException(f"at most {max_len} FaceIds per request")
    return [face_id(v) for v in values]


def int_range(name: str, value: int, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidParameterException(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def float_range(name: str, value: float, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterException(f"{name} must be a number") from None
    if not lo <= v <= hi:
        raise InvalidParameterException(f"{name} must be between {lo} and {hi}, got {value!r}")
    return v


def choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidParameterException(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def encode_token(position: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": position}).encode()).decode()


def decode_token(token: str | None, kind: type) -> str | int | None:
    if token is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise InvalidPaginationTokenException("NextToken is not valid") from None
    if not isinstance(value, kind):
        raise InvalidPaginationTokenException("NextToken is not valid")
    return value
