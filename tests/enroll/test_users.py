"""Users: a badge holder with several faces; the door matches users, not single photos."""

from __future__ import annotations

import pytest

from facelink.enroll import faces, users
from facelink.errors import ConflictException, ResourceNotFoundException


@pytest.fixture()
def enrolled(ctx, faces_dir):
    faces.create_collection(ctx, "c")
    ids = {}
    for name, files in {"obama": ["1.jpg", "2.jpg"], "biden": ["1.jpg"]}.items():
        users.create_user(ctx, "c", name)
        ids[name] = [faces.index_faces(ctx, "c", faces_dir / "people" / name / f, f"{name}-{f}")
                     ["FaceRecords"][0]["Face"]["FaceId"] for f in files]
        out = users.associate_faces(ctx, "c", name, ids[name])
        assert len(out["AssociatedFaces"]) == len(files), out
    return ids


def test_users_roundtrip(ctx, enrolled, faces_dir):
    listed = users.list_users(ctx, "c")["Users"]
    assert listed == [{"UserId": "biden", "UserStatus": "ACTIVE"}, {"UserId": "obama", "UserStatus": "ACTIVE"}]
    ctx.extras = True  # FaceLink's extra member only when asked (`facelink --facelink-extras`)
    assert [(u["UserId"], u["FaceCount"]) for u in users.list_users(ctx, "c")["Users"]] == [("biden", 1), ("obama", 2)]
    with pytest.raises(ConflictException):  # Rekognition: an existing UserId is a conflict
        users.create_user(ctx, "c", "obama")
    res = users.search_users_by_image(ctx, "c", faces_dir / "people/obama/4.jpg", user_match_threshold=99)
    assert [m["User"]["UserId"] for m in res["UserMatches"]] == ["obama"]
    res = users.search_users(ctx, "c", face_id=enrolled["biden"][0], user_match_threshold=0)
    assert res["UserMatches"][0]["User"]["UserId"] == "obama" and res["UserMatches"][0]["Similarity"] < 50
    res = users.search_users(ctx, "c", user_id="obama", user_match_threshold=0)
    assert [m["User"]["UserId"] for m in res["UserMatches"]] == ["biden"]


def test_wrong_photo_is_not_associated(ctx, enrolled, faces_dir):
    stranger = faces.index_faces(ctx, "c", faces_dir / "people/rose_leslie/1.jpg", "rose")
    fid = stranger["FaceRecords"][0]["Face"]["FaceId"]
    out = users.associate_faces(ctx, "c", "obama", [fid])
    assert out["AssociatedFaces"] == []
    assert out["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["LOW_MATCH_CONFIDENCE"]
    out = users.associate_faces(ctx, "c", "obama", [enrolled["biden"][0]])
    assert out["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["ASSOCIATED_TO_A_DIFFERENT_USER"]


def test_delete_face_of_user_needs_disassociation(ctx, enrolled):
    fid = enrolled["obama"][1]
    out = faces.delete_faces(ctx, "c", [fid])
    assert out["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]
    assert users.disassociate_faces(ctx, "c", "obama", [fid])["DisassociatedFaces"] == [{"FaceId": fid}]
    assert faces.delete_faces(ctx, "c", [fid])["DeletedFaces"] == [fid]
    assert faces.list_faces(ctx, "c", user_id="obama")["Faces"][0]["FaceId"] == enrolled["obama"][0]


def test_delete_user_keeps_faces(ctx, enrolled):
    users.delete_user(ctx, "c", "biden")
    assert faces.describe_collection(ctx, "c")["UserCount"] == 1
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 3
    with pytest.raises(ResourceNotFoundException):
        users.delete_user(ctx, "c", "biden")
