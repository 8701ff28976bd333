"""Store.transaction composes: the store's own operations inside an outer transaction join it
(one commit, or one rollback for all); another thread's transaction never joins it."""

from __future__ import annotations

import threading

import pytest

from facelink.enroll.store import Store
from facelink.errors import StoreError


def test_operations_inside_a_transaction_commit_or_roll_back_together(tmp_path):
    store = Store(tmp_path / "f.db")
    store.insert_collection("c", "v")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.insert_user("c", "ann")
            store.insert_user("c", "bob")
            assert store.user_exists("c", "ann")  # seen inside, before the commit
            raise RuntimeError("a later step fails")
    assert not store.user_exists("c", "ann") and not store.user_exists("c", "bob")
    with store.transaction():
        store.insert_user("c", "ann")
        store.set_user_credential("c", "ann", "H10301:1:2")
    assert store.user_credential("c", "ann") == "H10301:1:2"
    store.close()


def test_another_threads_transaction_does_not_join(tmp_path):
    store = Store(tmp_path / "f.db")
    store.insert_collection("c", "v")
    errors: list[BaseException] = []
    with store.transaction():
        store.insert_user("c", "ann")

        def other() -> None:
            try:
                store.insert_user("c", "bob")
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], StoreError)
    assert store.user_exists("c", "ann") and not store.user_exists("c", "bob")
    store.close()
