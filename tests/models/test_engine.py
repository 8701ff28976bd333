"""DetectFaces / CompareFaces on real photos, and typed errors for bad input."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from facelink.errors import (
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
)
from facelink.models.image import decode_image
from facelink.models.operations import compare_faces, detect_faces


def test_same_person_above_door_threshold(engine, faces_dir):
    out = compare_faces(engine, faces_dir / "people/obama/1.jpg", faces_dir / "people/obama/2.jpg", 99.0)
    assert len(out["FaceMatches"]) == 1
    assert out["FaceMatches"][0]["Similarity"] >= 99.0


def test_different_people_well_below(engine, faces_dir):
    out = compare_faces(engine, faces_dir / "people/obama/1.jpg", faces_dir / "people/biden/1.jpg", 0.0)
    assert out["FaceMatches"][0]["Similarity"] < 50.0


def test_compare_against_group_photo(engine, faces_dir):
    out = compare_faces(engine, faces_dir / "people/biden/2.jpg", faces_dir / "multi/obama_and_biden.jpg", 99.0)
    # Biden, Obama and a child at the bottom right: only Biden (left half) matches
    assert len(out["FaceMatches"]) == 1 and len(out["UnmatchedFaces"]) == 2
    box = out["FaceMatches"][0]["Face"]["BoundingBox"]
    assert 0 <= box["Left"] < 0.5 and 0 < box["Width"] <= 1


def test_detect_faces_shape_and_counts(engine, faces_dir):
    out = detect_faces(engine, faces_dir / "multi/six_people.jpg")
    assert len(out["FaceDetails"]) == 6
    d = out["FaceDetails"][0]
    assert set(d) == {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"}
    assert [lm["Type"] for lm in d["Landmarks"]] == ["eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"]
    assert 0 < d["Confidence"] <= 100
    assert d["Landmarks"][0]["X"] < d["Landmarks"][1]["X"]
    assert len(detect_faces(engine, faces_dir / "multi/five_people.jpg")["FaceDetails"]) == 5


def test_rgba_grayscale_and_16bit_inputs(engine, faces_dir, tmp_path):
    assert detect_faces(engine, faces_dir / "hard/32bit.png")["FaceDetails"]
    grey = cv2.cvtColor(cv2.imread(str(faces_dir / "people/obama/1.jpg")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert len(detect_faces(engine, tmp_path / "grey.png")["FaceDetails"]) == 1
    cv2.imwrite(str(tmp_path / "deep.png"), grey.astype(np.uint16) * 257)
    assert len(detect_faces(engine, tmp_path / "deep.png")["FaceDetails"]) == 1


def test_exif_orientation_is_applied_and_reported(engine, faces_dir, tmp_path):
    img = Image.open(faces_dir / "people/obama/1.jpg").rotate(90, expand=True)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    img.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    out = detect_faces(engine, tmp_path / "rotated.jpg")
    assert out["OrientationCorrection"] == "ROTATE_90"
    assert len(out["FaceDetails"]) == 1
    assert abs(out["FaceDetails"][0]["Pose"]["Roll"]) < 20  # upright after correction


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data,error", [
    (b"", InvalidImageFormatException),
    (b"this is a text file renamed to .jpg\n" * 10, InvalidImageFormatException),
    (_png_header(20000, 20000), ImageTooLargeException),
])
def test_bad_bytes_give_typed_errors(engine, data, error, tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(data)
    with pytest.raises(error):
        detect_faces(engine, path)


def test_truncated_tiny_and_missing_images(engine, faces_dir, tmp_path):
    data = (faces_dir / "people/obama/1.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[:200])
    with pytest.raises(InvalidImageFormatException):
        detect_faces(engine, tmp_path / "trunc.jpg")
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    with pytest.raises(InvalidParameterException, match="1x1"):
        decode_image(buf.getvalue())
    with pytest.raises(InvalidParameterException, match="not found"):
        detect_faces(engine, tmp_path / "nope.jpg")
    with pytest.raises(ImageTooLargeException):
        decode_image(b"\xff\xd8" + b"\0" * (16 * 1024 * 1024))


def test_compare_without_source_face(engine, faces_dir, tmp_path):
    blank = np.full((240, 320, 3), 127, np.uint8)
    with pytest.raises(InvalidParameterException, match="no face"):
        compare_faces(engine, blank, faces_dir / "people/obama/1.jpg")
    with pytest.raises(InvalidParameterException):
        compare_faces(engine, faces_dir / "people/obama/1.jpg", faces_dir / "people/obama/2.jpg", 150)
