"""The Python API against Rekognition's service model: ID patterns, errors, limits, tokens,
QualityFilter, UserStatus, numeric model versions, image formats; and issue 8 item 6 (re-indexing
an indexed photo with a UserId associates it)."""

from __future__ import annotations

import csv
import re

import cv2
import numpy as np
import pytest

from facelink.enroll import bulk, faces, images, search, users
from facelink.errors import (
    ConflictException,
    IdempotentParameterMismatchException,
    InvalidImageFormatException,
    InvalidParameterException,
    InvalidS3ObjectException,
)


@pytest.mark.parametrize("call", [
    lambda ctx: faces.create_collection(ctx, "nl\n"),
    lambda ctx: users.create_user(ctx, "c", "u1\n"),
    lambda ctx: faces.list_faces(ctx, "c", user_id="u1\n"),
    lambda ctx: search.search_faces(ctx, "c", "6f7c3e6a-0000-4000-8000-00000000000a\n"),
])
def test_ids_are_full_matches(ctx, call):
    faces.create_collection(ctx, "c")
    with pytest.raises(InvalidParameterException):
        call(ctx)


def test_external_image_id_trailing_newline_refused(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    with pytest.raises(InvalidParameterException):
        faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg", "ext\n")
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 0


@pytest.mark.parametrize("ext", [".bmp", ".webp", ".tiff"])
def test_only_jpeg_and_png(ctx, engine, faces_dir, ext):
    pixels = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    data = cv2.imencode(ext, pixels)[1].tobytes()
    faces.create_collection(ctx, "c")
    with pytest.raises(InvalidImageFormatException):
        faces.index_faces(ctx, "c", data)
    with pytest.raises(InvalidImageFormatException):
        images.detect_faces(engine, data)
    png = cv2.imencode(".png", pixels)[1].tobytes()
    assert images.detect_faces(engine, png)["FaceDetails"]


def test_gif_refused(engine):
    gif = b"GIF89a" + b"\0" * 2000
    with pytest.raises(InvalidImageFormatException):
        images.detect_faces(engine, gif)


def test_compare_faces_without_target_face_and_quality_filter(engine, faces_dir):
    blank = cv2.imencode(".png", np.full((240, 320, 3), 127, np.uint8))[1].tobytes()
    obama = faces_dir / "people/obama/1.jpg"
    with pytest.raises(InvalidParameterException, match="target"):
        images.compare_faces(engine, obama, blank)
    small = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(faces_dir / "people/obama/2.jpg")), None,
                                            fx=0.12, fy=0.12))[1].tobytes()
    assert images.compare_faces(engine, obama, small, 0)["FaceMatches"]  # NONE: compared
    with pytest.raises(InvalidParameterException, match="target"):  # HIGH: the small face is filtered
        images.compare_faces(engine, obama, small, 0, quality_filter="HIGH")
    with pytest.raises(InvalidParameterException):
        images.compare_faces(engine, obama, small, quality_filter="BEST")


def test_attributes_accept_model_values(engine, faces_dir):
    out = images.detect_faces(engine, faces_dir / "people/obama/1.jpg", ["DEFAULT", "AGE_RANGE", "EMOTIONS"])
    assert set(out["FaceDetails"][0]) == {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"}
    with pytest.raises(InvalidParameterException):
        images.detect_faces(engine, faces_dir / "people/obama/1.jpg", ["AGE"])


def test_s3_object_is_invalid_s3_object():
    with pytest.raises(InvalidS3ObjectException):
        images.image_from_json({"S3Object": {"Bucket": "b", "Name": "x.jpg"}}, base64_bytes=True)
    with pytest.raises(InvalidParameterException):
        images.image_from_json({"Bytes": "%%%"}, base64_bytes=True)


def test_limits_as_the_model(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    assert faces.list_collections(ctx, max_results=0)["CollectionIds"] == ["c"]  # 0: default page
    faces.index_faces(ctx, "c", faces_dir / "multi/two_people.jpg", max_faces=500)
    assert len(faces.list_faces(ctx, "c", max_results=0)["Faces"]) == 2
    with pytest.raises(InvalidParameterException):
        faces.list_faces(ctx, "c", max_results=4097)


def test_numeric_model_versions_and_extras(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    idx = faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg")
    versions = [idx["FaceModelVersion"], idx["FaceRecords"][0]["Face"]["IndexFacesModelVersion"],
                faces.list_collections(ctx)["FaceModelVersions"][0], faces.describe_collection(ctx, "c")["FaceModelVersion"]]
    assert all(re.fullmatch(r"[0-9.]+", v) for v in versions) and len(set(versions)) == 1
    assert "FaceLinkExtensions" not in faces.describe_collection(ctx, "c")
    ctx.extras = True
    assert faces.describe_collection(ctx, "c")["FaceLinkExtensions"]["FaceModelVersion"] == ctx.engine.model_version


def test_client_request_tokens(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    assert users.create_user(ctx, "c", "u", client_request_token="t-1") == {}
    assert users.create_user(ctx, "c", "u", client_request_token="t-1") == {}  # a retry, not a conflict
    with pytest.raises(ConflictException):
        users.create_user(ctx, "c", "u", client_request_token="t-2")
    with pytest.raises(IdempotentParameterMismatchException):
        users.create_user(ctx, "c", "other", client_request_token="t-1")
    with pytest.raises(InvalidParameterException):
        users.create_user(ctx, "c", "v", client_request_token="bad token!")
    assert users.list_users(ctx, "c")["Users"] == [{"UserId": "u", "UserStatus": "CREATED"}]
    fid = faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg")["FaceRecords"][0]["Face"]["FaceId"]
    first = users.associate_faces(ctx, "c", "u", [fid], client_request_token="a-1")
    assert first["AssociatedFaces"] == [{"FaceId": fid}] and first["UserStatus"] == "ACTIVE"
    assert users.associate_faces(ctx, "c", "u", [fid], client_request_token="a-1") == first
    out = users.disassociate_faces(ctx, "c", "u", [fid], client_request_token="d-1")
    assert out["DisassociatedFaces"] == [{"FaceId": fid}] and out["UserStatus"] == "CREATED"
    assert users.delete_user(ctx, "c", "u", client_request_token="x-1") == {}
    assert users.delete_user(ctx, "c", "u", client_request_token="x-1") == {}  # retried: same answer
    assert users.list_users(ctx, "c")["Users"] == []


def test_search_users_by_image_quality_filter(ctx, faces_dir, tmp_path):
    faces.create_collection(ctx, "c")
    users.create_user(ctx, "c", "obama")
    faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg", user_id="obama")
    small = cv2.resize(cv2.imread(str(faces_dir / "people/obama/2.jpg")), None, fx=0.12, fy=0.12)
    data = cv2.imencode(".jpg", small)[1].tobytes()
    assert users.search_users_by_image(ctx, "c", data, 0)["UserMatches"]
    with pytest.raises(InvalidParameterException, match="QualityFilter"):
        users.search_users_by_image(ctx, "c", data, 0, quality_filter="HIGH")


# -- issue 8 item 6: re-indexing an indexed photo with --user-id associates it -----------------
def test_reindex_with_user_associates(ctx, faces_dir):
    photo = faces_dir / "people/obama/1.jpg"
    faces.create_collection(ctx, "c")
    first = faces.index_faces(ctx, "c", photo, "badge-1")
    fid = first["FaceRecords"][0]["Face"]["FaceId"]
    users.create_user(ctx, "c", "obama")
    again = faces.index_faces(ctx, "c", photo, "badge-1", user_id="obama")
    assert again["FaceRecords"][0]["Face"]["FaceId"] == fid  # not stored twice...
    assert again["FaceRecords"][0]["Face"]["UserId"] == "obama"  # ...but associated now
    assert [f["FaceId"] for f in faces.list_faces(ctx, "c", user_id="obama")["Faces"]] == [fid]
    assert faces.index_faces(ctx, "c", photo, "badge-1", user_id="obama") == again  # idempotent
    users.create_user(ctx, "c", "biden")
    with pytest.raises(ConflictException):  # associated with someone else: said, not ignored
        faces.index_faces(ctx, "c", photo, "badge-1", user_id="biden")


def test_index_with_user_is_all_or_nothing(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    users.create_user(ctx, "c", "obama")
    faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg", user_id="obama")
    with pytest.raises(InvalidParameterException, match="does not look like"):
        faces.index_faces(ctx, "c", faces_dir / "people/rose_leslie/1.jpg", "rose", user_id="obama")
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 1  # nothing indexed without its association


def test_bulk_rerun_with_users_associates_and_reports_it(ctx, faces_dir, tmp_path):
    faces.create_collection(ctx, "c")
    rows = [(faces_dir / "people/obama/1.jpg", "o1"), (faces_dir / "people/biden/1.jpg", "b1")]
    for user in ("", "x"):
        roster = tmp_path / f"roster{user}.csv"
        with roster.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "external_image_id", "user_id"])
            for img, ext in rows:
                w.writerow([img, ext, f"{ext}-{user}" if user else ""])
        summary = bulk.index_entries(ctx, "c", bulk.roster_entries(roster)).to_json()
        assert summary["Summary"]["Indexed"] == 2
        assert [i["UserId"] for i in summary["Indexed"]] == ([None, None] if not user else ["o1-x", "b1-x"])
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 2  # not indexed twice
    assert len(faces.list_faces(ctx, "c", user_id="o1-x")["Faces"]) == 1  # and really associated
    assert users.list_users(ctx, "c")["Users"] == [{"UserId": "b1-x", "UserStatus": "ACTIVE"},
                                                   {"UserId": "o1-x", "UserStatus": "ACTIVE"}]
