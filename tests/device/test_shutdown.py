"""SIGTERM with decisions still queued: the pump is the only drainer, so every event reaches the
broker exactly once (shutdown used to flush on the main thread while the pump was draining)."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest

from facelink.device.decision import DENIED_UNKNOWN, Decision
from facelink.mqtt.outbox import Outbox

from .conftest import Watcher


def test_sigterm_with_queued_events_publishes_each_once(tmp_path, broker, faces_dir, enroll, start_door):
    enroll(faces_dir, "obama", "1.jpg")  # the door needs its collection
    outbox = Outbox(tmp_path / "outbox.db")
    queued = []
    for _ in range(400):  # decisions made while the broker was away, still in the outbox
        d = Decision(DENIED_UNKNOWN, "door-1", "door", "m/1", 99.0, similarity=12.5)
        outbox.put(d.event_id, "facelink/door-1/decision", d.payload())
        queued.append(d.event_id)
    outbox.close()
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="sigterm-watcher")
    door = start_door(broker.port, str(faces_dir / "people" / "biden"), camera__loop="true")
    assert watcher.wait_for(lambda: watcher.payloads("/decision"), 120), door.log()
    assert door.stop(signal.SIGTERM) == 0, door.log()  # while the pump is mid-drain
    assert sqlite3.connect(tmp_path / "outbox.db").execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert watcher.wait_for(lambda: len(watcher.payloads("/decision")) >= len(queued), 60)
    received = [json.loads(p)["event_id"] for p in watcher.raw("/decision")]
    assert received[:len(queued)] == queued  # in order
    assert len(received) == len(set(received))  # exactly once (the door's own decisions follow)
    watcher.close()


def test_a_step_that_fails_at_shutdown_skips_none_after_it(tmp_path, make_settings, engine, gpio):
    """Found in review: the first step that raised (here the camera's and the panel's close)
    ended the shutdown there: the door relay was not closed (a GPIO pulse stayed on for its
    timer), nor the outbox. Every step runs; the exit code says one failed."""
    from facelink.device.door import GpioRelay

    from .conftest import door_daemon

    pin = gpio.gpio(17)
    settings = make_settings(camera={"source": str(tmp_path)}, mqtt={"port": 1})
    daemon = door_daemon(settings, engine, GpioRelay(17, 600.0))
    daemon.relay.pulse("ann")
    assert pin.state == 1

    def broken() -> None:
        raise OSError("device gone")

    daemon.camera.stop = broken
    daemon.panel.close = broken
    assert daemon.shutdown(flush_timeout_s=1) == 1
    assert pin.state == 0  # the pulse ended locked
    with pytest.raises(sqlite3.ProgrammingError):  # the outbox was closed
        daemon.outbox.put("late", "t", {})


def test_a_card_verification_open_when_the_door_stops_is_recorded(tmp_path, make_settings, engine, faces_dir):
    """card_and_face: a badge is read, then the door stops (systemd stop, a restart) inside its
    card window, before any face: the verification closes DENIED_NO_FACE "the door stopped" and
    is in the outbox for the next start to send (found in review, tenth session: nothing was
    recorded of that person at the door)."""
    from facelink.access.badges import BadgeRead
    from facelink.enroll import credentials, faces, users
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    from .conftest import door_daemon

    settings = make_settings(camera={"source": str(tmp_path)}, mqtt={"port": 1},
                             matching={"mode": "card_and_face", "card_window_s": 600, "collection_id": "door"})
    daemon = door_daemon(settings, engine)
    with Store(settings.store.database) as store:
        ctx = Context(store, lambda: engine)
        faces.index_faces(ctx, "door", str(faces_dir / "people/obama/1.jpg"), external_image_id="obama")
        (face,) = faces.list_faces(ctx, "door")["Faces"]
        users.create_user(ctx, "door", "obama")
        users.associate_faces(ctx, "door", "obama", [face["FaceId"]])
        credentials.put_user_credential(ctx, "door", "obama", "H10301:7:700")
    daemon.index.refresh(0)
    assert daemon.pipeline.badge(BadgeRead("H10301:7:700", "mqtt"), daemon.clock.now()) == []  # window open
    assert daemon.shutdown(flush_timeout_s=0.5) == 0
    outbox = Outbox(settings.mqtt.outbox)
    payloads = [json.loads(e.payload) for e in outbox.peek(10)]
    outbox.close()
    assert [(p["decision"], p["user_id"], p["reason"]) for p in payloads] == \
        [("DENIED_NO_FACE", "obama", "the door stopped")]
