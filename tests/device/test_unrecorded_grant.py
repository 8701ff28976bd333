"""A GRANTED the outbox could not record (found in review): the door stays locked (fail closed), and
the person is decided afresh once the outbox works again, not held back by the cooldown of a
GRANTED that was never published nor carried out."""

from __future__ import annotations

import json
import sqlite3

from facelink.device.daemon import Daemon
from facelink.enroll.context import Context
from facelink.enroll.store import Store

from .test_partial_steps import ONE_FRAME, _enroll
from .test_pipeline import _frame


def _published(daemon) -> list[dict]:
    return [json.loads(e.payload) for e in daemon.outbox.peek(100)]


def test_a_grant_the_outbox_could_not_record_does_not_hold_back_the_next(tmp_path, faces_dir, engine,
                                                                        make_settings, broker, monkeypatch):
    """obama is GRANTED (1 of 1 frame, cooldown 30 s); recording it fails once (the outbox's
    database locked past its busy timeout). The door stays locked and an ERROR is published. The
    outbox works again while obama still stands there, then he steps away (his track ages out)
    and comes back: on main nothing is ever published for him again within the 30 s: the track
    keeps a GRANTED nobody saw, and the cooldown of that unpublished GRANTED holds back the next
    one (admit() -> False: not published, no relay, no record)."""
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)},
                             matching=ONE_FRAME, liveness={"enabled": False})
    with Store(settings.store.database) as store:
        _enroll(Context(store, lambda: engine), faces_dir)
    daemon = Daemon(settings, engine=engine)
    try:
        monkeypatch.setattr(daemon.clock, "frame", lambda frame: frame.captured_at)  # the scene's time
        real_put, failed = daemon.outbox.put, []

        def put(event_id, topic, payload):
            if payload.get("decision") == "GRANTED" and not failed:
                failed.append(event_id)
                raise sqlite3.OperationalError("database is locked")
            return real_put(event_id, topic, payload)

        monkeypatch.setattr(daemon.outbox, "put", put)

        def frame(i: float) -> None:
            f = _frame(faces_dir, "obama", int(i))
            try:
                daemon._frame(type(f)(f.pixels, i, f.index))
            except Exception as exc:  # noqa: BLE001 - as Daemon.run does
                daemon.fail_closed(exc, i)

        frame(0)  # GRANTED, not recorded: ERROR, door locked
        assert failed and [d["decision"] for d in _published(daemon)] == ["ERROR"]
        for t in (1, 2, 3):  # the outbox works again; obama still at the door
            frame(t)
        # still in view, his track starts again (found in review: with only the cooldown withdrawn, the
        # track kept the GRANTED nobody saw and he waited until he stepped away)
        assert [d["decision"] for d in _published(daemon) if d.get("user_id") == "obama"] == ["GRANTED"]
        for t in (12, 13, 14):  # he stepped away (track_max_age_s 5) and came back, within 30 s
            frame(t)
        granted = [d for d in _published(daemon) if d["decision"] == "GRANTED" and d["user_id"] == "obama"]
        assert granted, "obama is never granted again: the unrecorded GRANTED's cooldown holds back the next"
    finally:
        daemon.shutdown(flush_timeout_s=1)
