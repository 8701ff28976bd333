"""Fail closed: a decision that cannot be recorded opens nothing, and an ERROR still goes out."""

from __future__ import annotations

import sqlite3

import pytest

from facelink.device.decision import Decision
from facelink.device.door import CommandRelay
from facelink.enroll import faces

from .conftest import Watcher, door_daemon


def test_disk_full_outbox_keeps_the_door_locked(tmp_path, broker, make_settings, engine, faces_dir):
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(faces_dir / "video/feat_man.mp4")})
    marker = tmp_path / "door-opened"
    daemon = door_daemon(settings, engine, CommandRelay(f"touch {marker}", 1.0))
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="fail-closed-watcher")
    assert daemon.transport.wait_connected(10)
    # the outbox's disk is full: SQLite reports SQLITE_FULL once no page is left
    conn = daemon.outbox._conn
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for i in range(10_000):
            daemon.outbox.put(f"filler-{i}", "t", {"pad": "x" * 500})
    granted = Decision("GRANTED", "door-1", "door", engine.model_version, 99.0, user_id="ann", similarity=99.9)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        daemon.emit(granted)
    daemon.fail_closed(RuntimeError("outbox disk full"))
    assert watcher.wait_for(lambda: watcher.payloads("/decision"), 10)
    sent = watcher.payloads("/decision")
    assert [d["decision"] for d in sent] == ["ERROR"] and "outbox disk full" in sent[0]["reason"]
    assert sent[0]["event_id"] and sent[0]["schema"] == "facelink.decision/1"  # the audit log accepts it
    assert not marker.exists()  # the relay never moved
    watcher.close()
    daemon.shutdown(flush_timeout_s=1)


def test_store_disk_full_is_a_typed_error(ctx, faces_dir):
    from facelink.errors import StoreError

    faces.create_collection(ctx, "c")
    pages = ctx.store.query("PRAGMA page_count")[0][0]
    ctx.store._conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError):
        for name in ("obama/1.jpg", "obama/2.jpg", "biden/1.jpg", "biden/2.jpg", "kit_harington/1.jpg"):
            faces.index_faces(ctx, "c", faces_dir / "people" / name, name.replace("/", "-"))


def test_repeated_errors_are_published_once_and_remembered_within_a_bound(tmp_path, broker, make_settings, engine):
    from facelink.device.daemon import ERROR_KEYS_MAX

    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = door_daemon(settings, engine)
    try:
        for i in range(5):  # the same failure, with a varying detail after the first line
            daemon.fail_closed(OSError(f"camera read failed\nattempt {i}"))
        assert len(daemon.outbox) == 1  # one ERROR published (the rest within ERROR_REPEAT_S)
        for i in range(10 * ERROR_KEYS_MAX):  # distinct messages: memory stays bounded
            daemon.fail_closed(RuntimeError(f"failure number {i}"))
        assert len(daemon._last_error) <= ERROR_KEYS_MAX
        assert daemon.stats.errors == 5 + 10 * ERROR_KEYS_MAX  # every one still counted
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_a_frame_that_fails_part_way_still_publishes_what_it_decided(tmp_path, broker, make_settings, engine,
                                                                     faces_dir, monkeypatch):
    """The daemon's frame step: a card window the frame closed (DENIED_NO_FACE) reaches the
    outbox although the frame then failed, and the failure is still raised for the loop's ERROR;
    a badge read whose step fails loses none of the reads after it."""
    import json
    import time

    import numpy as np

    from facelink.device.camera import Frame
    from facelink.enroll import credentials, users
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)},
                             matching={"mode": "card_and_face", "card_window_s": 5.0})
    daemon = door_daemon(settings, engine)
    with Store(settings.store.database) as store:
        ctx = Context(store, lambda: engine)
        for user, card in (("ann", "H10301:18:1001"), ("bob", "H10301:18:1002")):
            users.create_user(ctx, "door", user)
            credentials.put_user_credential(ctx, "door", user, card)
    try:
        def decided() -> list[tuple[str, str | None]]:
            events = [json.loads(e.payload) for e in daemon.outbox.peek(100)]
            return [(e["decision"], e["user_id"]) for e in events if "decision" in e]

        start = daemon.clock.now()
        calls = []
        real_badge = daemon.pipeline.badge

        def badge_failing_once(read, now):
            calls.append(read.credential)
            if len(calls) == 1:
                raise RuntimeError("credential lookup failed")
            return real_badge(read, now)

        monkeypatch.setattr(daemon.pipeline, "badge", badge_failing_once)
        for card in ("H10301:18:1002", "H10301:18:1001"):
            assert daemon.badges.put(card, "serial")
        daemon._badges(start)
        assert calls == ["H10301:18:1002", "H10301:18:1001"]  # the second read was not lost
        assert [d for d in decided() if d[0] == "ERROR"] and daemon.pipeline.factors.claim.user_id == "ann"

        def broken(_pixels):
            raise RuntimeError("detector failed")

        monkeypatch.setattr(daemon.engine, "detect", broken)
        frame = Frame(np.zeros((480, 640, 3), np.uint8), time.monotonic(), 0, scene_at=start + 60.0)
        with pytest.raises(RuntimeError, match="detector failed"):
            daemon._frame(frame)
        assert ("DENIED_NO_FACE", "ann") in decided() and daemon.pipeline.factors.claim is None
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_health_still_goes_out_when_the_outbox_cannot_be_read(tmp_path, broker, make_settings, engine):
    """The outbox's database fails (here its connection is gone): health says the depth and the
    drops are unknown (None), not a stale or zero depth, and is still published; the door's
    shutdown still completes."""
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = door_daemon(settings, engine)
    watcher = Watcher(broker.port, ["facelink/+/health"], client_id="outbox-health-watcher")
    try:
        assert daemon.transport.wait_connected(10)
        assert daemon.health()["outbox_depth"] == 0
        daemon.outbox._conn.close()
        health = daemon.health()
        assert health["outbox_depth"] is None and health["outbox_dropped"] is None
        assert health["mqtt_connected"] is True  # the rest of health is still there
        assert daemon.publish_health()
        assert watcher.wait_for(lambda: any(h.get("outbox_depth", 0) is None for h in watcher.payloads("/health")), 10)
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=1)


def test_an_actuation_failure_the_full_outbox_cannot_take_reaches_the_broker(tmp_path, broker, make_settings,
                                                                                engine, faces_dir):
    """The GRANTED was recorded, then the outbox's disk filled, then the relay failed: the
    ACTUATION_FAILED that says the door did not open is published directly (the audit trail would
    otherwise keep a GRANTED for a door that stayed shut)."""
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(faces_dir / "video/feat_man.mp4")})
    go = tmp_path / "go"
    daemon = door_daemon(settings, engine, CommandRelay(f"while [ ! -e {go} ]; do sleep 0.05; done; exit 3", 30.0))
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="fail-closed-actuation-watcher")
    try:
        assert daemon.transport.wait_connected(10)
        assert watcher.barrier(daemon.transport.publish)
        granted = Decision("GRANTED", "door-1", "door", engine.model_version, 99.0, user_id="ann", similarity=99.9)
        daemon.emit(granted)  # recorded; the relay's command waits for `go`
        conn = daemon.outbox._conn
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for i in range(10_000):
                daemon.outbox.put(f"filler-{i}", "t", {"pad": "x" * 500})
        go.touch()  # the relay fails now
        def decisions() -> list[dict]:
            return [p for p in watcher.payloads("/decision") if "decision" in p]  # (not the barrier's marker)

        assert watcher.wait_for(decisions, 30)
        [failed] = decisions()
        assert (failed["decision"], failed["refers_to"]) == ("ACTUATION_FAILED", granted.event_id)
        assert "3" in failed["reason"]
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=1)
