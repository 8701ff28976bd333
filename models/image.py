"""Decode and validate input images (bytes, a path or a numpy frame) into BGR uint8 arrays.

Bad input becomes a typed error, never a crash: empty or truncated files, text renamed .jpg,
tiny or gigantic images. EXIF orientation is applied and reported the way Rekognition reports
``OrientationCorrection``.
"""

from __future__ import annotations

import errno
import io
import stat
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelink.errors import ImageTooLargeException, InvalidImageFormatException, InvalidParameterException

MAX_IMAGE_BYTES = 15 * 1024 * 1024  # Rekognition's limit for image bytes
MAX_PIXELS = 40_000_000  # decoding beyond this would need gigabytes on a door kiosk
MIN_SIDE = 32
MAX_JPEG_SCANS = 100  # progressive JPEGs use ~10; libjpeg has no limit of its own

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
    try:  # not is_file(): it raises for a name too long or a folder it may not search
        st = p.stat()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise InvalidParameterException(f"cannot read image file {p}: {exc.strerror or exc}") from None
        raise InvalidParameterException(f"image file not found: {p}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidParameterException(f"image file not found: {p}")
    size = st.st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageTooLargeException(f"{p} is {size} bytes; the limit is {MAX_IMAGE_BYTES} bytes")
    try:
        return p.read_bytes()
    except OSError as exc:  # unreadable, or gone since the check
        raise InvalidParameterException(f"cannot read image file {p}: {exc.strerror or exc}") from None


def _header_info(data: bytes) -> tuple[int, int, int | None]:
    """(width, height, EXIF orientation) from the header alone, before any pixel is decoded.

    An image whose header Pillow cannot read is refused rather than handed to OpenCV blind:
    its size would only be known after OpenCV had allocated it.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width, im.height, _orientation(im)
    except Image.DecompressionBombError:
        raise ImageTooLargeException(f"image has more than {MAX_PIXELS} pixels") from None
    except Exception:  # noqa: BLE001 - any parse failure is the same answer: not an image we read
        raise InvalidImageFormatException("image bytes are not a decodable JPEG/PNG image") from None


def _orientation(im: object) -> int | None:
    """The EXIF orientation tag when it is one of the eight defined values, else None."""
    try:
        value = im.getexif().get(0x0112)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject the image
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _check_scans(data: bytes) -> None:
    """Each scan of a progressive JPEG is a pass over the whole image: a small file with
    thousands of empty scans keeps the decoder busy for minutes (a CPU bomb). Markers cannot
    occur inside entropy-coded data (0xFF is stuffed), so counting them bounds the scans."""
    if data[:2] == b"\xff\xd8" and data.count(b"\xff\xda") > MAX_JPEG_SCANS:
        raise InvalidImageFormatException(f"JPEG has more than {MAX_JPEG_SCANS} scans")


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


def _reduced_flag(header: tuple[int, int, int | None], max_side: int | None) -> int:
    """Decode big images at 1/2, 1/4 or 1/8 scale (JPEG DCT scaling: much faster) while the
    longer side stays >= ``max_side``."""
    if max_side is None:
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
    _check_dims(header[0], header[1])
    _check_scans(data)
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR* convert grey, RGBA and 16-bit images to 8-bit BGR and apply EXIF rotation.
    try:
        pixels = cv2.imdecode(buf, _reduced_flag(header, max_side))
    except cv2.error:
        pixels = None
    if pixels is None or pixels.size == 0:
        raise InvalidImageFormatException("image bytes are not a decodable JPEG/PNG image")
    if max(pixels.shape[:2]) > max(header[0], header[1]):  # the decoder read another size than the header
        raise InvalidImageFormatException("image header and image data disagree on its size")
    _check_dims(pixels.shape[1], pixels.shape[0])
    orientation = None if header[2] is None else _EXIF_ORIENTATION.get(header[2], "ROTATE_0")
    return DecodedImage(np.ascontiguousarray(pixels), orientation)
