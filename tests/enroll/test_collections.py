"""Collections and faces against a real SQLite + sqlite-vec database, real models, real faces."""

from __future__ import annotations

import re
import uuid

import cv2
import numpy as np
import pytest

from facelink.enroll import faces, search
from facelink.enroll.store import SCHEMA_VERSION, Store
from facelink.enroll.views import public_model_version
from facelink.errors import (
    ConflictException,
    InvalidPaginationTokenException,
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)


def test_collection_lifecycle(ctx):
    out = faces.create_collection(ctx, "lobby")
    assert out["StatusCode"] == 200 and out["FaceModelVersion"] == public_model_version(ctx.engine.model_version)
    assert re.fullmatch(r"[0-9.]+", out["FaceModelVersion"])
    with pytest.raises(ResourceAlreadyExistsException):
        faces.create_collection(ctx, "lobby")
    faces.create_collection(ctx, "garage")
    assert faces.list_collections(ctx)["CollectionIds"] == ["garage", "lobby"]
    page = faces.list_collections(ctx, max_results=1)
    assert page["CollectionIds"] == ["garage"]
    assert faces.list_collections(ctx, 1, page["NextToken"])["CollectionIds"] == ["lobby"]
    d = faces.describe_collection(ctx, "lobby")
    assert d["FaceCount"] == 0 and d["UserCount"] == 0 and "CreationTimestamp" in d
    faces.delete_collection(ctx, "lobby")
    with pytest.raises(ResourceNotFoundException):
        faces.describe_collection(ctx, "lobby")


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256, "semi;colon"])
def test_bad_collection_ids(ctx, bad):
    with pytest.raises(InvalidParameterException):
        faces.create_collection(ctx, bad)


def test_index_list_search_delete(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    idx = faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg", "obama-1")
    assert len(idx["FaceRecords"]) == 1 and idx["UnindexedFaces"] == []
    rec = idx["FaceRecords"][0]
    assert rec["Face"]["ExternalImageId"] == "obama-1" and "FaceDetail" in rec
    obama_id = rec["Face"]["FaceId"]
    faces.index_faces(ctx, "c", faces_dir / "people/obama/2.jpg", "obama-2")
    faces.index_faces(ctx, "c", faces_dir / "people/biden/1.jpg", "biden-1")

    # search by face id: the other Obama photo, not Biden
    res = search.search_faces(ctx, "c", obama_id, face_match_threshold=90)
    assert [m["Face"]["ExternalImageId"] for m in res["FaceMatches"]] == ["obama-2"]
    assert res["FaceMatches"][0]["Similarity"] >= 99

    # search by image: largest face, matches sorted by similarity
    res = search.search_faces_by_image(ctx, "c", faces_dir / "people/obama/3.jpg", face_match_threshold=0)
    sims = [m["Similarity"] for m in res["FaceMatches"]]
    assert sims == sorted(sims, reverse=True) and len(sims) == 3
    assert res["FaceMatches"][0]["Face"]["ExternalImageId"].startswith("obama")
    assert res["FaceMatches"][-1]["Face"]["ExternalImageId"] == "biden-1"
    assert res["SearchedFaceBoundingBox"]["Width"] > 0

    # paging
    first = faces.list_faces(ctx, "c", max_results=2)
    assert len(first["Faces"]) == 2 and "NextToken" in first
    second = faces.list_faces(ctx, "c", max_results=2, next_token=first["NextToken"])
    assert len(second["Faces"]) == 1 and "NextToken" not in second
    with pytest.raises(InvalidPaginationTokenException):
        faces.list_faces(ctx, "c", next_token="garbage")

    # delete: one existing, one unknown
    unknown = str(uuid.uuid4())
    out = faces.delete_faces(ctx, "c", [obama_id, unknown])
    assert out["DeletedFaces"] == [obama_id]
    assert out["UnsuccessfulFaceDeletions"] == [{"FaceId": unknown, "Reasons": ["FACE_NOT_FOUND"]}]
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 2
    with pytest.raises(ResourceNotFoundException):
        search.search_faces(ctx, "c", obama_id)


def test_same_image_twice_is_not_duplicated(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    a = faces.index_faces(ctx, "c", faces_dir / "people/biden/1.jpg", "b1")
    b = faces.index_faces(ctx, "c", faces_dir / "people/biden/1.jpg", "b1")
    assert a["FaceRecords"][0]["Face"]["FaceId"] == b["FaceRecords"][0]["Face"]["FaceId"]
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 1
    faces.index_faces(ctx, "c", faces_dir / "people/biden/1.jpg", "other-id")  # another ExternalImageId
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 2


def test_max_faces_and_quality_filter(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    out = faces.index_faces(ctx, "c", faces_dir / "multi/six_people.jpg", "group", max_faces=2,
                            quality_filter="NONE")
    assert len(out["FaceRecords"]) == 2
    assert [u["Reasons"] for u in out["UnindexedFaces"]] == [["EXCEEDS_MAX_FACES"]] * 4
    areas = [r["Face"]["BoundingBox"]["Width"] * r["Face"]["BoundingBox"]["Height"] for r in out["FaceRecords"]]
    smallest_kept = min(areas)
    for u in out["UnindexedFaces"]:
        bb = u["FaceDetail"]["BoundingBox"]
        assert bb["Width"] * bb["Height"] <= smallest_kept
    # a face ~40 px wide in a 640x480 frame: kept with LOW, refused with HIGH
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[150:270, 250:346] = cv2.resize(photo, (96, 120), interpolation=cv2.INTER_AREA)
    small = faces.index_faces(ctx, "c", canvas, "small", quality_filter="HIGH")
    assert small["FaceRecords"] == [] and "SMALL_BOUNDING_BOX" in small["UnindexedFaces"][0]["Reasons"]
    assert len(faces.index_faces(ctx, "c", canvas, "small", quality_filter="LOW")["FaceRecords"]) == 1


@pytest.mark.parametrize("kwargs", [{"max_faces": 0}, {"max_faces": "2"}, {"quality_filter": "BEST"},
                                    {"external_image_id": "bad id"}])
def test_index_parameter_errors(ctx, faces_dir, kwargs):
    faces.create_collection(ctx, "c")
    with pytest.raises(InvalidParameterException):
        faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg", **kwargs)


def test_unknown_collection_and_bad_ids(ctx, faces_dir):
    with pytest.raises(ResourceNotFoundException):
        faces.index_faces(ctx, "missing", faces_dir / "people/obama/1.jpg")
    faces.create_collection(ctx, "c")
    with pytest.raises(InvalidParameterException):
        search.search_faces(ctx, "c", "not-a-uuid")
    with pytest.raises(InvalidParameterException):
        search.search_faces_by_image(ctx, "c", faces_dir / "people/obama/1.jpg", max_faces=5000)
    with pytest.raises(InvalidParameterException):
        faces.delete_faces(ctx, "c", [])


def test_model_version_mismatch_is_refused(ctx, faces_dir):
    ctx.store.insert_collection("old", "yunet-2023mar+sface-2021dec/some-other-build")
    with pytest.raises(ConflictException, match="FaceModelVersion"):
        search.search_faces_by_image(ctx, "old", faces_dir / "people/obama/1.jpg")
    with pytest.raises(ConflictException):
        faces.index_faces(ctx, "old", faces_dir / "people/obama/1.jpg")


def test_no_image_bytes_stored_by_default(ctx, faces_dir, tmp_path):
    faces.create_collection(ctx, "c")
    faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg", "o")
    assert ctx.store.query("SELECT count(*) FROM faces WHERE thumbnail IS NOT NULL")[0][0] == 0
    ctx.keep_thumbnails = True
    faces.index_faces(ctx, "c", faces_dir / "people/obama/2.jpg", "o2")
    thumb = ctx.store.query("SELECT thumbnail FROM faces WHERE external_image_id = 'o2'")[0][0]
    assert thumb[:2] == b"\xff\xd8"  # a small JPEG, only because the operator asked


def test_schema_is_versioned_and_reopens(tmp_path):
    with Store(tmp_path / "x.db") as s:
        assert s.query("SELECT value FROM meta WHERE key='schema_version'")[0][0] == str(SCHEMA_VERSION)
    with Store(tmp_path / "x.db") as s:  # migrations are idempotent
        assert s.query("SELECT count(*) FROM collections")[0][0] == 0
