"""A step that fails part-way (a frame, a badge read): what it decided is published, never a
GRANTED (the failure is doubt: the door stays locked), and every error is reported."""

from __future__ import annotations

import json
import time

import cv2
import pytest

from facelink.device.assembly import build_components
from facelink.device.camera import Frame
from facelink.device.decision import Decision
from facelink.device.door import CommandRelay
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DecidedThenFailed, DoorPipeline
from facelink.enroll import faces, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store

from .test_pipeline import _frame

# one frame decides each face: the first face matched is decided before the second is looked up
ONE_FRAME = {"frames_required": 1, "frames_window": 1, "similarity_threshold": 80.0, "cooldown_s": 30.0,
             "track_max_age_s": 5.0}


def _enroll(ctx, faces_dir) -> None:
    faces.create_collection(ctx, "door")
    for name in ("obama", "biden"):
        users.create_user(ctx, "door", name)
        faces.index_faces(ctx, "door", faces_dir / f"people/{name}/2.jpg", name, user_id=name)


def _two_faces(faces_dir, i: int = 0) -> Frame:
    return Frame(cv2.imread(str(faces_dir / "multi/obama_and_biden.jpg")), float(i), i)


def _second_lookup_fails(index, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = index.best

    def best(embedding):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("index read failed")
        return real(embedding)

    monkeypatch.setattr(index, "best", best)
    return calls


@pytest.fixture()
def door(ctx, faces_dir, engine, make_settings) -> DoorPipeline:
    _enroll(ctx, faces_dir)
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    settings = make_settings(matching=ONE_FRAME, liveness={"enabled": False})
    return DoorPipeline(engine, index, build_components(settings, engine))


def test_a_grant_made_before_the_frame_failed_is_not_a_grant(door, faces_dir, monkeypatch):
    """Two faces; the first is GRANTED, the lookup of the second fails: what comes out is an
    ERROR naming the first user, and that person is decided afresh by the next working frame
    (the track starts again, the cooldown is withdrawn)."""
    calls = _second_lookup_fails(door.index, monkeypatch)
    with pytest.raises(DecidedThenFailed) as failed:
        door.process(_two_faces(faces_dir, 0), 0.0)
    carried = failed.value.decisions
    assert [d.decision for d in carried] == ["ERROR"] and carried[0].user_id in ("obama", "biden")
    assert "not granted" in carried[0].reason and "index read failed" in carried[0].reason
    assert str(failed.value.cause) == "index read failed" and len(calls) == 2
    assert all(t.decided is None for t in door.components.tracker.tracks())  # nobody stays decided
    again = door.process(_two_faces(faces_dir, 1), 0.1)  # within the 30 s cooldown
    assert carried[0].user_id in {d.user_id for d in again if d.decision == "GRANTED"}


def test_a_decision_whose_labelling_fails_is_carried_not_lost(ctx, faces_dir, engine, make_settings, monkeypatch):
    """The policy decided the track, then a later step of the same decision (here the cooldown
    check) failed: the decision comes out with the error (as ERROR: it was a GRANTED)."""
    _enroll(ctx, faces_dir)
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    settings = make_settings(matching=ONE_FRAME, liveness={"enabled": False})
    door = DoorPipeline(engine, index, build_components(settings, engine))

    def admit(decision, now):
        raise RuntimeError("cooldown table broken")

    monkeypatch.setattr(door.components.policy, "admit", admit)
    with pytest.raises(DecidedThenFailed) as failed:
        door.process(_frame(faces_dir, "obama", 0), 0.0)
    assert [(d.decision, d.user_id) for d in failed.value.decisions] == [("ERROR", "obama")]


def _labelling_fails_once(door, monkeypatch) -> None:
    real = door.factors.decided
    calls: list[int] = []

    def decided(decision):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("labelling failed")
        return real(decision)

    monkeypatch.setattr(door.factors, "decided", decided)


@pytest.mark.parametrize("mode", ["face", "card_or_face"])
def test_a_failed_step_withdraws_only_the_cooldown_it_started(ctx, faces_dir, engine, make_settings, monkeypatch,
                                                               mode):
    """obama was GRANTED (by face, or by badge in card_or_face) and the door opened; seconds later
    his face is decided again on a new track, and labelling that decision fails before the
    cooldown check. The earlier GRANTED's cooldown stays: no second GRANTED within it. The
    carried decision is labelled as far as it got (here: not at all, the label failed)."""
    from facelink.access.badges import BadgeRead
    from facelink.device.factors import Factors
    from facelink.enroll import credentials

    credentials_of = {"obama": "H10301:18:1001"}
    _enroll(ctx, faces_dir)
    credentials.put_user_credential(ctx, "door", "obama", credentials_of["obama"])
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    settings = make_settings(matching=ONE_FRAME, liveness={"enabled": False})
    door = DoorPipeline(engine, index, build_components(settings, engine))
    door.factors = Factors(mode, 10.0, lambda card: ctx.store.user_by_credential("door", card))
    first = door.badge(BadgeRead(credentials_of["obama"], "serial"), 0.0) if mode == "card_or_face" else \
        door.process(_frame(faces_dir, "obama", 0), 0.0)
    assert [(d.decision, d.user_id) for d in first] == [("GRANTED", "obama")]
    _labelling_fails_once(door, monkeypatch)
    with pytest.raises(DecidedThenFailed) as failed:
        door.process(_frame(faces_dir, "obama", 60), 6.0)  # a new track: the first aged out at 5 s
    assert [(d.decision, d.user_id) for d in failed.value.decisions] == [("ERROR", "obama")]
    again = door.process(_frame(faces_dir, "obama", 61), 6.1) + door.process(_frame(faces_dir, "obama", 62), 6.2)
    assert [d for d in again if d.decision == "GRANTED"] == []  # within the 30 s cooldown


def test_the_carried_decision_keeps_the_labels_it_got(ctx, faces_dir, engine, make_settings, monkeypatch):
    """The cooldown check fails after the decision was labelled with its mode and factors: the
    decision carried out is the labelled one (the audit log says card_or_face, face)."""
    from facelink.device.factors import Factors

    _enroll(ctx, faces_dir)
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    settings = make_settings(matching=ONE_FRAME, liveness={"enabled": False})
    door = DoorPipeline(engine, index, build_components(settings, engine))
    door.factors = Factors("card_or_face", 10.0, lambda card: None)

    def admit(decision, now):
        raise RuntimeError("cooldown table broken")

    monkeypatch.setattr(door.components.policy, "admit", admit)
    with pytest.raises(DecidedThenFailed) as failed:
        door.process(_frame(faces_dir, "obama", 0), 0.0)
    assert [(d.decision, d.user_id, d.mode, d.factors) for d in failed.value.decisions] == \
        [("ERROR", "obama", "card_or_face", ("face",))]


def _door_daemon(tmp_path, faces_dir, engine, make_settings, broker, relay=None):
    from facelink.device.daemon import Daemon

    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)},
                             matching=ONE_FRAME, liveness={"enabled": False})
    with Store(settings.store.database) as store:
        _enroll(Context(store, lambda: engine), faces_dir)
    return Daemon(settings, engine=engine, relay=relay)


def _published(daemon) -> list[dict]:
    return [json.loads(e.payload) for e in daemon.outbox.peek(100)]


def test_the_door_does_not_open_for_a_frame_that_failed(tmp_path, faces_dir, engine, make_settings, broker,
                                                        monkeypatch):
    """The daemon: the failed frame's withheld GRANTED is published as ERROR and the relay does
    not move; the next frame that works opens the door (the same setup can open it)."""
    marker = tmp_path / "door-opened"
    daemon = _door_daemon(tmp_path, faces_dir, engine, make_settings, broker, CommandRelay(f"touch {marker}", 0.1))
    try:
        _second_lookup_fails(daemon.index, monkeypatch)
        with pytest.raises(RuntimeError, match="index read failed"):
            daemon._frame(_two_faces(faces_dir, 0))
        sent = _published(daemon)
        assert [e["decision"] for e in sent] == ["ERROR"] and sent[0]["user_id"] in ("obama", "biden")
        assert not marker.exists()
        daemon._frame(_two_faces(faces_dir, 1))
        granted = {e["user_id"] for e in _published(daemon) if e["decision"] == "GRANTED"}
        assert granted == {"obama", "biden"}  # the withheld one too, within its cooldown
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_every_decision_and_every_error_of_a_step_is_reported(tmp_path, faces_dir, engine, make_settings, broker,
                                                              monkeypatch):
    """A step that failed part-way carried two decisions and the first can't be recorded: the
    second is still recorded, the frame's own error is raised, the recording error is reported
    (ERROR). Badge reads: a read that fails and a window check that fails are both reported."""
    daemon = _door_daemon(tmp_path, faces_dir, engine, make_settings, broker)
    try:
        p = daemon.pipeline.components.policy
        first, second = (Decision("DENIED_UNKNOWN", p.device_id, p.collection_id, p.model_version, p.threshold,
                                  track_id=i) for i in (1, 2))
        real_put = daemon.outbox.put

        def put(event_id, topic, payload):
            if event_id == first.event_id:
                raise OSError("outbox write failed")
            return real_put(event_id, topic, payload)

        def process(frame, now):
            raise DecidedThenFailed([first, second], RuntimeError("embedder failed"))

        monkeypatch.setattr(daemon.outbox, "put", put)
        monkeypatch.setattr(daemon.pipeline, "process", process)
        with pytest.raises(RuntimeError, match="embedder failed"):
            daemon._frame(_two_faces(faces_dir))
        sent = _published(daemon)
        assert [e["event_id"] for e in sent if e["decision"] == "DENIED_UNKNOWN"] == [second.event_id]
        assert [e["reason"] for e in sent if e["decision"] == "ERROR"] == ["OSError: outbox write failed"]

        def badge(read, now):
            raise RuntimeError("credential lookup failed")

        def tick(now, reason=None):
            raise RuntimeError("window check failed")

        monkeypatch.setattr(daemon.pipeline, "badge", badge)
        monkeypatch.setattr(daemon.pipeline, "tick", tick)
        assert daemon.badges.put("H10301:18:1001", "serial")
        errors = daemon.stats.errors
        daemon._badges(daemon.clock.now())  # nothing escapes
        assert daemon.stats.errors == errors + 2
        reasons = [e["reason"] for e in _published(daemon) if e["decision"] == "ERROR"]
        assert "RuntimeError: credential lookup failed" in reasons and "RuntimeError: window check failed" in reasons
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_a_badge_whose_track_restart_fails_opens_no_verification(ctx, faces_dir, engine, make_settings, monkeypatch):
    """card_and_face: obama's face is already tracked when his badge is read, and restarting the
    tracks in view fails. The badge step is an error, and the verification it opened is dropped:
    the next frames of his face (on the track that was not restarted) grant nothing; he taps again."""
    from facelink.access.badges import BadgeRead
    from facelink.device.factors import Factors
    from facelink.enroll import credentials

    _enroll(ctx, faces_dir)
    credentials.put_user_credential(ctx, "door", "obama", "H10301:18:1001")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    door = DoorPipeline(engine, index, build_components(
        make_settings(matching=ONE_FRAME, liveness={"enabled": False}), engine))
    door.factors = Factors("card_and_face", 10.0, lambda card: ctx.store.user_by_credential("door", card))
    assert door.process(_frame(faces_dir, "obama", 0), 0.0) == []  # no badge yet
    tracker = door.components.tracker

    def restart(track):
        raise RuntimeError("tracker broken")

    with monkeypatch.context() as m:
        m.setattr(tracker, "restart", restart)
        with pytest.raises(DecidedThenFailed, match="tracker broken"):
            door.badge(BadgeRead("H10301:18:1001", "serial"), 0.5)
    assert door.factors.claim is None
    later = door.process(_frame(faces_dir, "obama", 1), 1.0) + door.process(_frame(faces_dir, "obama", 2), 2.0)
    assert [d for d in later if d.decision == "GRANTED"] == []
    assert door.badge(BadgeRead("H10301:18:1001", "serial"), 3.0) == []  # he taps again: it works
    assert [(d.decision, d.user_id) for d in door.process(_frame(faces_dir, "obama", 3), 3.1)] == [("GRANTED", "obama")]
