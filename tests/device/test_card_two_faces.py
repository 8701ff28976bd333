"""card_and_face with the holder's face twice in one frame (the holder and a photo of the holder
held beside him, a reflection, a detector that finds one face twice): one badge tap is one card+face
verdict, one record and at most one lock pulse (suspected in review 101: the first track's verdict
closes the claim and a second track's GRANTED in the same frame would go out face-only, a second
pulse for one tap).

It cannot happen, and these tests hold that: the pipeline observes and decides one track at a
time (``DoorPipeline._process``), so the first track's verdict closes the claim before the second
track's frame is observed; that frame is "nocard" (``Factors.observe``), which counts toward no
decision, and a track can only decide on the frame just observed (everything before it was short
of N). The second face decides nothing for that tap."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facelink.access.badges import BadgeRead
from facelink.device.camera import Frame
from facelink.device.daemon import Daemon
from facelink.device.decision import Decision
from facelink.enroll import credentials
from facelink.enroll.context import Context
from facelink.enroll.store import Store

from .test_factors import BIDEN, OBAMA, _door
from .test_partial_steps import _enroll


def _twice(faces_dir, i: int) -> Frame:
    """obama's photo pasted twice, side by side, in one 640x480 frame (sensor-like noise)."""
    photo = cv2.resize(cv2.imread(str(faces_dir / "people/obama/1.jpg")), (232, 290), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[95:385, 40:272] = photo
    canvas[95:385, 368:600] = photo
    noise = np.random.default_rng(i).normal(0, 2, canvas.shape)
    return Frame(np.clip(canvas + noise, 0, 255).astype(np.uint8), float(i), i)


@pytest.mark.parametrize("required,window", [(1, 1), (2, 3)])
def test_two_faces_of_the_holder_in_one_frame_are_one_verdict(ctx, faces_dir, engine, make_settings,
                                                               required, window):
    door = _door(ctx, faces_dir, engine, make_settings, "card_and_face", window_s=5.0)
    door.components.policy.frames_required, door.components.policy.frames_window = required, window
    assert len(door.engine.detect(_twice(faces_dir, 0).pixels)) == 2  # both faces are seen
    assert door.badge(BadgeRead(OBAMA, "mqtt"), 0.0) == []
    out = []
    for i in range(1, 9):  # cooldown 0: nothing hides a second GRANTED
        out += door.process(_twice(faces_dir, i), 0.1 * i)
    assert [(d.decision, d.user_id, d.factors) for d in out] == [("GRANTED", "obama", ("card", "face"))]
    assert len(door.components.tracker.tracks()) == 2 and door.factors.claim is None
    # biden's badge, obama's face twice: one DENIED_WRONG_FACE, nothing face-only
    assert door.badge(BadgeRead(BIDEN, "mqtt"), 1.0) == []
    wrong = []
    for i in range(11, 19):
        wrong += door.process(_twice(faces_dir, i), 0.1 * i)
    assert [(d.decision, d.user_id, d.factors) for d in wrong] == [("DENIED_WRONG_FACE", "biden", ("card", "face"))]


def test_the_daemon_pulses_the_lock_once_for_one_tap(tmp_path, faces_dir, engine, make_settings, monkeypatch):
    """The real daemon (card_and_face, one frame decides, cooldown 0): a tap of obama's badge and
    frames with his face twice: one GRANTED (card, face) in the outbox and one lock pulse."""
    settings = make_settings(camera={"source": str(tmp_path)}, mqtt={"port": 1}, credentials={"sources": []},
                             liveness={"enabled": False},
                             matching={"mode": "card_and_face", "card_window_s": 10.0, "frames_required": 1,
                                       "frames_window": 1, "similarity_threshold": 80.0, "cooldown_s": 0.0,
                                       "track_max_age_s": 5.0})
    with Store(settings.store.database) as store:
        c = Context(store, lambda: engine)
        _enroll(c, faces_dir)
        credentials.put_user_credential(c, "door", "obama", OBAMA)
    daemon = Daemon(settings, engine=engine)
    try:
        monkeypatch.setattr(daemon.clock, "frame", lambda frame: frame.captured_at)  # the scene's time
        pulses: list[str | None] = []
        real_pulse = daemon.relay.pulse
        monkeypatch.setattr(daemon.relay, "pulse", lambda user, **kw: (pulses.append(user), real_pulse(user, **kw))[1])
        assert daemon.badges.put(OBAMA, "serial")
        daemon._badges(0.0)
        assert daemon.pipeline.factors.claim is not None
        for i in range(1, 6):
            daemon._frame(_twice(faces_dir, i))
        sent = [json.loads(e.payload) for e in daemon.outbox.peek(100)]
        decisions = [(d["decision"], d["user_id"], d["factors"]) for d in sent if "decision" in d]
        assert decisions == [("GRANTED", "obama", ["card", "face"])], decisions
        assert pulses == ["obama"]
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_a_verdict_with_no_verification_open_is_never_a_grant(ctx, faces_dir, engine, make_settings):
    """The owner holds the rule whatever order its caller decides in: two GRANTED verdicts for one
    tap (a caller that observed both faces before deciding either): the first is the tap's
    card+face verdict, the second goes out as ERROR (opens nothing; the reason says why), as does
    a DENIED_WRONG_FACE made on a closed claim."""
    door = _door(ctx, faces_dir, engine, make_settings, "card_and_face", window_s=5.0)
    p = door.components.policy
    assert door.badge(BadgeRead(OBAMA, "mqtt"), 0.0) == []
    first, second = (Decision("GRANTED", p.device_id, p.collection_id, p.model_version, p.threshold,
                              user_id="obama", similarity=99.5, track_id=i, frames_matched=1, frames_window=1)
                     for i in (1, 2))
    one, two = door.factors.decided(first), door.factors.decided(second)
    assert (one.decision, one.factors) == ("GRANTED", ("card", "face"))
    assert (two.decision, two.factors, two.user_id, two.event_id) == ("ERROR", ("face",), "obama", second.event_id)
    assert two.reason.startswith("not granted: GRANTED for obama made with no badge verification open")
    assert two.payload()["decision"] == "ERROR"  # the schema takes it
    wrong = door.factors.decided(Decision("DENIED_WRONG_FACE", p.device_id, p.collection_id,
                                                  p.model_version, p.threshold, user_id="obama", track_id=3))
    assert (wrong.decision, wrong.factors) == ("ERROR", ("face",)) and wrong.reason.startswith("not denied")
    assert door.factors.claim is None
