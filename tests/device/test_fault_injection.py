"""Fault injection on the real door: the daemon as a process, a real SQLite + sqlite-vec
collection, a real mosquitto. What is injected is a real fault at the database: the tables the
door reads are renamed away by another process (every read then fails with "no such table"), and
renamed back. The door's own decision timestamps say when it decided."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from facelink.enroll import users
from facelink.enroll.context import Context
from facelink.enroll.db import connect
from facelink.enroll.store import Store

from .conftest import Watcher

# a decision on every frame (a one-frame track is never live to the liveness checks: they are off)
FAST = {"matching__frames_required": 1, "matching__frames_window": 1, "matching__cooldown_s": 0,
        "matching__track_max_age_s": 0, "liveness__enabled": "false"}
RELOAD_INTERVAL_S = 1.0  # the default matching.reload_interval_s the door runs with


def hide(db: Path, *tables: str, back: bool = False) -> None:
    """Rename tables away (or back) in one transaction, as another process would."""
    conn = connect(db)
    conn.execute("BEGIN IMMEDIATE")
    for t in tables:
        old, new = (f"{t}_hidden", t) if back else (t, f"{t}_hidden")
        conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
    conn.execute("COMMIT")
    conn.close()


def when(decision: dict) -> float:
    return datetime.fromisoformat(decision["timestamp"]).timestamp()


def granted_after(watcher: Watcher, t: float) -> list[dict]:
    return [d for d in watcher.payloads("/decision") if d["decision"] == "GRANTED" and when(d) > t]


def health_seen(watcher: Watcher, start: int, ok: bool) -> bool:
    return any(h.get("collection_ok") is ok for h in watcher.payloads("/health")[start:])


@pytest.fixture()
def watcher(broker):
    w = Watcher(broker.port, ["facelink/+/decision", "facelink/+/health"], client_id="fault-watcher")
    yield w
    w.close()


def test_unreadable_collection_grants_nobody_until_readable_again(tmp_path, broker, faces_dir, enroll,
                                                                   start_door, watcher):
    enroll(faces_dir, "feat_man", "photo.jpg")
    db = tmp_path / "facelink.db"
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"), camera__loop="true", **FAST)
    assert watcher.wait_for(lambda: granted_after(watcher, 0), 90), door.log()
    mark = len(watcher.payloads("/health"))
    hidden_at = time.time()
    hide(db, "changes", "faces")
    assert watcher.wait_for(lambda: health_seen(watcher, mark, False), 30), door.log()
    locked_at = time.time()  # the door has said it is locked
    mark = len(watcher.payloads("/health"))
    assert watcher.wait_for(lambda: len(watcher.payloads("/health")) >= mark + 3, 30)  # a few seconds on
    assert not health_seen(watcher, mark, True)  # still unreadable, still locked
    errors = [d for d in watcher.payloads("/decision") if d["decision"] == "ERROR" and when(d) > hidden_at]
    assert errors and "no such table" in errors[0]["reason"], errors
    assert not granted_after(watcher, locked_at)
    assert not granted_after(watcher, hidden_at + RELOAD_INTERVAL_S + 1.0)
    restored_at = time.time()
    hide(db, "changes", "faces", back=True)
    assert watcher.wait_for(lambda: granted_after(watcher, restored_at), 60), door.log()  # open again
    assert not [d for d in granted_after(watcher, hidden_at + RELOAD_INTERVAL_S + 1.0) if when(d) < restored_at]
    assert door.stop() == 0


@pytest.mark.parametrize("read_error", [False, True], ids=["plain", "with-read-error"])
def test_deleted_user_is_never_granted_after_the_reload_interval(tmp_path, broker, faces_dir, engine, enroll,
                                                                 start_door, watcher, read_error):
    enroll(faces_dir, "feat_man", "photo.jpg")
    db = tmp_path / "facelink.db"
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"), camera__loop="true", **FAST)
    assert watcher.wait_for(lambda: granted_after(watcher, 0), 90), door.log()
    mark = len(watcher.payloads("/health"))
    if read_error:  # the door's next read of the revocation fails: freeze it so that it can't
        os.kill(door.proc.pid, signal.SIGSTOP)  # read in between the deletion and the fault
    try:
        with Store(db) as store:
            users.delete_user(Context(store, lambda: engine), "door", "feat_man")
        if read_error:
            hide(db, "faces")
    finally:
        if read_error:
            os.kill(door.proc.pid, signal.SIGCONT)
    deleted_at = time.time()  # the deletion as the running door can see it
    if read_error:
        assert watcher.wait_for(lambda: health_seen(watcher, mark, False), 30), door.log()
        mark = len(watcher.payloads("/health"))
        hide(db, "faces", back=True)
        assert watcher.wait_for(lambda: health_seen(watcher, mark, True), 30), door.log()
    denied = lambda: [d for d in watcher.payloads("/decision")  # noqa: E731
                      if d["decision"] == "DENIED_UNKNOWN" and when(d) > deleted_at]
    assert watcher.wait_for(lambda: len(denied()) >= 5, 60), door.log()  # the face is still seen
    assert not granted_after(watcher, deleted_at + RELOAD_INTERVAL_S + 1.0)
    assert door.stop() == 0
    assert not granted_after(watcher, deleted_at + RELOAD_INTERVAL_S + 1.0)
