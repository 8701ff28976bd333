"""The door's index is all-or-nothing: a failed read of the collection leaves nobody grantable
until a full reload succeeds, and a revoked badge never survives a failure."""

from __future__ import annotations

import pytest

from facelink.device.matcher import UserIndex
from facelink.enroll import faces, users
from facelink.enroll.store import Store
from facelink.errors import StoreError


def _probe(engine, faces_dir, name: str):
    import cv2

    return engine.analyze(cv2.imread(str(faces_dir / "people" / name)), max_faces=1)[0].embedding


@pytest.fixture()
def enrolled(ctx, faces_dir):
    faces.create_collection(ctx, "door")
    for name in ("obama", "biden"):
        users.create_user(ctx, "door", name)
        faces.index_faces(ctx, "door", faces_dir / "people" / name / "1.jpg", f"{name}-badge", user_id=name)
    return ctx


def _fail_next_faces_read(monkeypatch) -> list[str]:
    """The next read of the faces table fails once, at the store boundary (a real database)."""
    real, failed = Store.query, []

    def flaky(self, sql, params=()):
        if " FROM faces " in sql and not failed:
            failed.append(sql)
            raise StoreError("database read failed: disk I/O error (injected)")
        return real(self, sql, params)

    monkeypatch.setattr(Store, "query", flaky)
    return failed


def test_revoked_user_is_never_matched_after_a_failed_read(enrolled, engine, faces_dir, monkeypatch):
    index = UserIndex(enrolled.store, "door", engine.model_version)
    index.load()
    biden, obama = _probe(engine, faces_dir, "biden/2.jpg"), _probe(engine, faces_dir, "obama/2.jpg")
    assert index.best(biden).user_id == "biden"
    users.delete_user(enrolled, "door", "biden")
    failed = _fail_next_faces_read(monkeypatch)
    with pytest.raises(StoreError):
        index.refresh(0)
    assert failed
    with pytest.raises(StoreError):  # nobody is grantable while the index is unusable
        index.best(obama)
    assert not index.usable and index.error
    assert index.refresh(0)  # a normal refresh: the full reload succeeds
    assert index.usable and index.error is None
    match = index.best(biden)
    assert match is None or match.user_id != "biden"
    assert index.best(obama).user_id == "obama"


def test_failed_full_reload_keeps_the_index_unusable(enrolled, engine, faces_dir, monkeypatch):
    index = UserIndex(enrolled.store, "door", engine.model_version)
    index.load()
    position = index.position
    faces.index_faces(enrolled, "door", faces_dir / "people/obama/2.jpg", "obama-2", user_id="obama")
    _fail_next_faces_read(monkeypatch)
    failed_again = []
    with pytest.raises(StoreError):
        index.refresh(0)
    assert index.position == position  # the position did not move past what was not applied
    monkeypatch.setattr(Store, "query", _raise_on_faces(failed_again))
    with pytest.raises(StoreError):
        index.refresh(0)  # the full reload fails too: still unusable
    assert failed_again and not index.usable and len(index) == 0
    monkeypatch.undo()
    assert index.refresh(0) and index.usable and index.position > position
    assert index.best(_probe(engine, faces_dir, "obama/3.jpg")).user_id == "obama"


def _raise_on_faces(record: list[str]):
    real = Store.query

    def query(self, sql, params=()):
        if " FROM faces " in sql:
            record.append(sql)
            raise StoreError("database read failed: disk I/O error (injected)")
        return real(self, sql, params)

    return query
