"""Decode and validate input images (bytes, a path or a numpy frame) into BGR uint8 arrays.

Bad input becomes a typed error, never a crash: empty or truncated files, text renamed .jpg,
tiny or gigantic images. EXIF orientation is applied and reported the way Rekognition reports
``OrientationCorrection``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelink.errors import ImageTooLargeException, InvalidImageFormatException, InvalidParameterException

MAX_IMAGE_BYTES = 15 * 1024 * 1024  # Rekognition's limit for image bytes
MAX_PIXELS = 40_000_000  # decoding beyond this would need gigabytes on a door kiosk
MIN_SIDE = 32

_EXIF_ORIENTATION = {1: "ROTATE_0", 3: "ROTATE_180", 6: "ROTATE_90", 8: "ROTATE_270"}

ImageInput = bytes | bytearray | str | Path | np.ndarray

# Rekognition accepts JPEG and PNG only; the check is on the bytes, not the file name.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # H x W x 3, BGR, uint8
    orientation_correction: str | None  # None when the image carried no EXIF orientation

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def read_image_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise InvalidParameterException(f"image file not found: {p}")
    size = p.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageTooLargeException(f"{p} is {size} bytes; the limit is {MAX_IMAGE_BYTES} bytes")
    return p.read_bytes()


def _header_info(data: bytes) -> tuple[int, int, int | None] | None:
    """(width, height, exif orientation) from the header alone, or None if Pillow can't tell."""
    try:
        from PIL import Image
    except ImportError:  # Pillow is optional: OpenCV alone still decodes
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            orientation = None
            try:
                orientation = im.getexif().get(0x0112)
            except Exception:  # noqa: BLE001 - a broken EXIF block must not reject the image
                orientation = None
            return im.width, im.height, orientation
    except Image.DecompressionBombError:
        raise ImageTooLargeException(f"image has more than {MAX_PIXELS} pixels") from None
    except Exception:  # noqa: BLE001 - unknown to Pillow; OpenCV decides below
        return None


def _check_dims(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageTooLargeException(
            f"image is {width}x{height} pixels; the limit is {MAX_PIXELS} pixels")
    if min(width, height) < MIN_SIDE:
        raise InvalidParameterException(
            f"image is {width}x{height} pixels; each side must be at least {MIN_SIDE}")


def _to_bgr_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        if frame.dtype == np.uint16:
            frame = (frame >> 8).astype(np.uint8)
        elif np.issubdtype(frame.dtype, np.floating):
            frame = np.clip(frame * (255.0 if frame.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            raise InvalidImageFormatException(f"unsupported frame dtype {frame.dtype}")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2BGR)
    raise InvalidImageFormatException(f"unsupported frame shape {frame.shape}")


def _reduced_flag(header: tuple[int, int, int | None] | None, max_side: int | None) -> int:
    """Decode big images at 1/2, 1/4 or 1/8 scale (JPEG DCT scaling: much faster) while the
    longer side stays >= ``max_side``."""
    if header is None or max_side is None:
        return cv2.IMREAD_COLOR
    longer = max(header[0], header[1])
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if longer // factor >= max_side:
            return flag
    return cv2.IMREAD_COLOR


def decode_image(image: ImageInput, max_side: int | None = None) -> DecodedImage:
    """Return BGR pixels of ``image`` or raise a typed error saying why it can't be used.

    ``max_side``: the caller needs no more resolution than this (the image may be decoded
    smaller, never below it). Bounding boxes and landmarks are ratios, so they do not change.
    """
    if isinstance(image, np.ndarray):
        if image.size == 0:
            raise InvalidImageFormatException("empty frame")
        frame = _to_bgr_uint8(image)
        _check_dims(frame.shape[1], frame.shape[0])
        return DecodedImage(frame, None)
    if isinstance(image, (str, Path)):
        data = read_image_bytes(image)
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        raise InvalidParameterException(f"unsupported image type {type(image).__name__}")
    if not data:
        raise InvalidImageFormatException("image is empty (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeException(
            f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES} bytes")
    if not data.startswith(_SIGNATURES):
        raise InvalidImageFormatException("image is not JPEG or PNG (the formats Rekognition accepts)")
    header = _header_info(data)
    if header is not None:
        _check_dims(header[0], header[1])
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR* convert grey, RGBA and 16-bit images to 8-bit BGR and apply EXIF rotation.
    pixels = cv2.imdecode(buf, _reduced_flag(header, max_side))
    if pixels is None or pixels.size == 0:
        raise InvalidImageFormatException("image bytes are not a decodable JPEG/PNG image")
    if header is None:
        _check_dims(pixels.shape[1], pixels.shape[0])
    orientation = None
    if header is not None and header[2] is not None:
        orientation = _EXIF_ORIENTATION.get(int(header[2]), "ROTATE_0")
    return DecodedImage(np.ascontiguousarray(pixels), orientation)
