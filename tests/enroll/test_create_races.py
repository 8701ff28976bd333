"""Two desks (two `facelink serve` workers, or serve and the CLI) creating the same user or
collection at once: the one that commits second gets Rekognition's answer for an existing id
(ConflictException, ResourceAlreadyExistsException), not a StoreError that serve turns into an
InternalServerError (HTTP 500) and logs as a server failure."""

from __future__ import annotations

import pytest

from facelink.enroll import faces, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.errors import ConflictException, ResourceAlreadyExistsException


@pytest.fixture()
def two_desks(tmp_path, engine):
    a = Context(Store(tmp_path / "desk.db"), lambda: engine)
    b = Context(Store(tmp_path / "desk.db"), lambda: engine)
    yield a, b
    a.store.close()
    b.store.close()


def _after_check(ctx: Context, monkeypatch, method: str, action) -> None:
    """Run ``action`` (the other desk's request) right after ``ctx`` checked that the id is free."""
    check = getattr(ctx.store, method)

    def check_then_other_desk(*args):
        out = check(*args)
        action()
        return out

    monkeypatch.setattr(ctx.store, method, check_then_other_desk)


def test_a_user_created_meanwhile_is_a_conflict(two_desks, monkeypatch):
    a, b = two_desks
    faces.create_collection(a, "door")
    _after_check(a, monkeypatch, "user_exists", lambda: users.create_user(b, "door", "obama"))
    with pytest.raises(ConflictException):
        users.create_user(a, "door", "obama")
    assert [u["UserId"] for u in users.list_users(a, "door")["Users"]] == ["obama"]


def test_a_collection_created_meanwhile_already_exists(two_desks, monkeypatch):
    a, b = two_desks
    _after_check(a, monkeypatch, "get_collection", lambda: faces.create_collection(b, "door"))
    with pytest.raises(ResourceAlreadyExistsException):
        faces.create_collection(a, "door")
