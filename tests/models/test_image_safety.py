"""The decode path refuses before it allocates or spins: found by tools/fuzz_images.py, each a
regression case (each fails on the decoder that read images without these checks)."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from facelink.errors import InvalidImageFormatException
from facelink.models.image import MAX_JPEG_SCANS, decode_image
from facelink.models.operations import detect_faces


def _segments(jpeg: bytes) -> list[tuple[int, int]]:
    """(marker, offset) of each header segment up to the first SOS."""
    out, i = [], 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF:
        marker = jpeg[i + 1]
        out.append((marker, i))
        if marker == 0xDA:
            break
        i += 2 + struct.unpack(">H", jpeg[i + 2:i + 4])[0]
    return out


def _progressive(faces_dir, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.open(faces_dir / "people/obama/1.jpg").convert(mode).save(buf, "JPEG", progressive=True)
    return buf.getvalue()


def test_jpeg_with_thousands_of_scans_is_refused(faces_dir):
    # each scan of a progressive JPEG is a pass over the whole image: a small file with many
    # empty scans kept libjpeg busy for minutes (5,000 scans: ~8 s at 9 megapixels here)
    data = _progressive(faces_dir)
    sof = next(off for m, off in _segments(data) if m == 0xC2)
    sos = next(off for m, off in _segments(data) if m == 0xDA)
    component = data[sof + 10]
    dc_scan = b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([component, 0, 0, 0, 0]) + b"\0" * 8
    bomb = data[:sos] + dc_scan * (MAX_JPEG_SCANS + 1) + b"\xff\xd9"
    with pytest.raises(InvalidImageFormatException, match="scans"):
        decode_image(bomb)


def test_progressive_jpeg_still_decodes(engine, faces_dir, tmp_path):
    (tmp_path / "p.jpg").write_bytes(_progressive(faces_dir, "RGB"))
    assert len(detect_faces(engine, tmp_path / "p.jpg")["FaceDetails"]) == 1


def _exif_orientation_ascii(value: bytes) -> bytes:
    """An EXIF block whose Orientation tag is text (type 2) instead of a SHORT."""
    entry = struct.pack("<HHI", 0x0112, 2, len(value)) + value.ljust(4, b"\0")[:4]
    return b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)


def test_exif_orientation_of_the_wrong_type_is_ignored(engine, faces_dir, tmp_path):
    buf = io.BytesIO()
    Image.open(faces_dir / "people/obama/1.jpg").save(buf, "JPEG", exif=_exif_orientation_ascii(b"abc"))
    (tmp_path / "e.jpg").write_bytes(buf.getvalue())
    out = detect_faces(engine, tmp_path / "e.jpg")  # was: ValueError from int("abc")
    assert "OrientationCorrection" not in out and len(out["FaceDetails"]) == 1


def test_a_format_only_opencv_reads_is_refused_before_decoding(tmp_path):
    # Radiance HDR: Pillow can't read its header, so its size would only be known after OpenCV
    # had allocated it (and OpenCV copies such files to /tmp to decode them)
    ok, hdr = cv2.imencode(".hdr", np.ones((64, 64, 3), np.float32))
    assert ok
    with pytest.raises(InvalidImageFormatException):
        decode_image(hdr.tobytes())
