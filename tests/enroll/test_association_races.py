"""Associations made by two desks (two `facelink serve` workers, or serve and the CLI) at once:
each runs on its own connection to the same database. A revocation (DeleteUser) or another
association that commits between an AssociateFaces' checks and its write must win: the door's
UserIndex never loads a face of a user who no longer exists, and a response never reports an
association that does not hold."""

from __future__ import annotations

import pytest

from facelink.device.matcher import UserIndex
from facelink.enroll import faces, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.errors import ResourceNotFoundException
from facelink.models.image import decode_image


@pytest.fixture()
def two_desks(tmp_path, engine, faces_dir):
    """Two contexts on one database file (two serve workers) and an unassociated face of obama."""
    a = Context(Store(tmp_path / "desk.db"), lambda: engine)
    b = Context(Store(tmp_path / "desk.db"), lambda: engine)
    faces.create_collection(a, "door")
    fid = faces.index_faces(a, "door", faces_dir / "people/obama/1.jpg", "obama-1")["FaceRecords"][0]["Face"]["FaceId"]
    yield a, b, fid
    a.store.close()
    b.store.close()


def _between_checks_and_write(ctx: Context, monkeypatch, action) -> None:
    """Run ``action`` (the other desk's request) after ``ctx``'s AssociateFaces has checked the
    user and read the faces, before it writes: the window two workers can interleave in."""
    lookup = ctx.lookup_faces

    def lookup_then_other_desk(*args, **kwargs):
        out = lookup(*args, **kwargs)
        action()
        return out

    monkeypatch.setattr(ctx, "lookup_faces", lookup_then_other_desk)


def test_a_user_deleted_while_a_face_is_associated_is_not_granted_by_the_door(two_desks, monkeypatch, engine,
                                                                             faces_dir):
    a, b, fid = two_desks
    users.create_user(a, "door", "obama")
    _between_checks_and_write(a, monkeypatch, lambda: users.delete_user(b, "door", "obama"))  # revoked
    with pytest.raises(ResourceNotFoundException):
        users.associate_faces(a, "door", "obama", [fid])
    assert not a.store.user_exists("door", "obama")
    assert [f["FaceId"] for f in faces.list_faces(a, "door")["Faces"] if f.get("UserId")] == []
    index = UserIndex(Store(a.store.path, readonly=True), "door", engine.model_version)
    index.load()
    probe = engine.analyze(decode_image(faces_dir / "people/obama/2.jpg").pixels)[0].embedding
    assert index.best(probe) is None, "the door matched a deleted user"


def test_a_face_taken_by_another_user_meanwhile_is_reported_unsuccessful(two_desks, monkeypatch):
    a, b, fid = two_desks
    users.create_user(a, "door", "obama")
    users.create_user(a, "door", "mallory")
    _between_checks_and_write(a, monkeypatch, lambda: users.associate_faces(b, "door", "mallory", [fid]))
    out = users.associate_faces(a, "door", "obama", [fid])
    owner = faces.list_faces(a, "door", face_ids=[fid])["Faces"][0].get("UserId")
    assert owner == "mallory", "the second association overwrote the first"
    assert out["AssociatedFaces"] == [], out
    assert out["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["ASSOCIATED_TO_A_DIFFERENT_USER"]


def test_a_face_taken_by_another_user_meanwhile_is_not_disassociated(two_desks, monkeypatch):
    a, b, fid = two_desks
    users.create_user(a, "door", "obama")
    users.create_user(a, "door", "mallory")
    users.associate_faces(a, "door", "obama", [fid])

    def move_to_mallory():
        users.disassociate_faces(b, "door", "obama", [fid])
        users.associate_faces(b, "door", "mallory", [fid])

    _between_checks_and_write(a, monkeypatch, move_to_mallory)
    out = users.disassociate_faces(a, "door", "obama", [fid])
    assert faces.list_faces(a, "door", face_ids=[fid])["Faces"][0].get("UserId") == "mallory"
    assert out["DisassociatedFaces"] == [], out
