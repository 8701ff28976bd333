"""matching.mode on real faces: card_and_face verifies the face against the badge holder (1:1),
card_or_face lets either factor open, every decision names its mode and factors."""

from __future__ import annotations

import pytest

from facelink.access.badges import BadgeRead
from facelink.device.assembly import build_components
from facelink.device.factors import Factors
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline
from facelink.enroll import credentials, faces, users

from .test_pipeline import _frame

OBAMA, BIDEN, STRANGER = "H10301:18:1001", "H10301:18:1002", "H10301:18:9999"


def _door(ctx, faces_dir, engine, make_settings, mode: str, window_s: float = 10.0) -> DoorPipeline:
    faces.create_collection(ctx, "door")
    for name, card in (("obama", OBAMA), ("biden", BIDEN)):
        users.create_user(ctx, "door", name)
        faces.index_faces(ctx, "door", faces_dir / f"people/{name}/2.jpg", name, user_id=name)
        credentials.put_user_credential(ctx, "door", name, card)
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    settings = make_settings(matching={"cooldown_s": 0.0, "track_max_age_s": 5.0},
                             liveness={"enabled": False})
    pipeline = DoorPipeline(engine, index, build_components(settings, engine))
    pipeline.factors = Factors(mode, window_s, lambda c: ctx.store.user_by_credential("door", c))
    return pipeline


def _frames(pipeline, faces_dir, name, start, n=6):
    out = []
    for i in range(start, start + n):
        out += pipeline.process(_frame(faces_dir, name, i), 0.1 * i)
    return out


def test_card_and_face(ctx, faces_dir, engine, make_settings):
    door = _door(ctx, faces_dir, engine, make_settings, "card_and_face", window_s=5.0)
    assert _frames(door, faces_dir, "obama", 0) == []  # a face without a badge opens nothing
    assert door.badge(BadgeRead(OBAMA, "mqtt"), 0.7) == []
    granted = _frames(door, faces_dir, "obama", 7)
    assert [(d.decision, d.user_id, d.mode, d.factors) for d in granted] == \
        [("GRANTED", "obama", "card_and_face", ("card", "face"))]
    assert granted[0].payload()["factors"] == ["card", "face"]
    # biden's badge, obama's face: the 1:1 check fails even though obama is enrolled
    assert door.badge(BadgeRead(BIDEN, "mqtt"), 1.4) == []
    wrong = _frames(door, faces_dir, "obama", 14)
    assert [(d.decision, d.user_id, d.factors) for d in wrong] == [("DENIED_WRONG_FACE", "biden", ("card", "face"))]
    assert wrong[0].similarity < 99.0
    # a badge and nobody in front of the camera: the window closes with DENIED_NO_FACE
    assert door.badge(BadgeRead(OBAMA, "serial"), 3.0) == []
    assert door.tick(4.0) == []
    assert [(d.decision, d.user_id, d.factors) for d in door.tick(8.5)] == [("DENIED_NO_FACE", "obama", ("card",))]
    unknown = door.badge(BadgeRead(STRANGER, "evdev"), 9.0)
    assert [(d.decision, d.user_id) for d in unknown] == [("DENIED_UNKNOWN_CARD", None)]


def test_card_or_face(ctx, faces_dir, engine, make_settings):
    door = _door(ctx, faces_dir, engine, make_settings, "card_or_face")
    by_card = door.badge(BadgeRead(BIDEN, "mqtt"), 0.0)
    assert [(d.decision, d.user_id, d.factors) for d in by_card] == [("GRANTED", "biden", ("card",))]
    by_face = _frames(door, faces_dir, "obama", 0)
    assert [(d.decision, d.user_id, d.mode, d.factors) for d in by_face] == \
        [("GRANTED", "obama", "card_or_face", ("face",))]


def test_face_mode_ignores_badges(ctx, faces_dir, engine, make_settings):
    door = _door(ctx, faces_dir, engine, make_settings, "face")
    assert door.badge(BadgeRead(OBAMA, "mqtt"), 0.0) == []
    assert [(d.decision, d.mode, d.factors) for d in _frames(door, faces_dir, "obama", 0)] == \
        [("GRANTED", "face", ("face",))]


def test_a_second_tap_within_the_cooldown_is_answered(ctx, faces_dir, engine, make_settings):
    """card_and_face with a cooldown: the holder who taps again (the door closed before they went
    through) gets a new GRANTED; the same face without a new tap stays held by the cooldown."""
    door = _door(ctx, faces_dir, engine, make_settings, "card_and_face", window_s=5.0)
    door.components.policy.cooldown_s = 60.0
    assert door.badge(BadgeRead(OBAMA, "mqtt"), 0.0) == []
    assert [d.decision for d in _frames(door, faces_dir, "obama", 0)] == ["GRANTED"]
    assert door.badge(BadgeRead(OBAMA, "mqtt"), 1.0) == []
    again = _frames(door, faces_dir, "obama", 10)
    assert [(d.decision, d.user_id, d.factors) for d in again] == [("GRANTED", "obama", ("card", "face"))]


def test_a_face_after_the_card_window_closed_opens_nothing(ctx, faces_dir, engine, make_settings):
    """The window is closed before a frame is looked at, not only between frames: a badge, then
    no frame until the window has passed (a camera that stalled, a replay that starts late), then
    the holder's face: DENIED_NO_FACE, never GRANTED."""
    door = _door(ctx, faces_dir, engine, make_settings, "card_and_face", window_s=1.0)
    assert door.badge(BadgeRead(OBAMA, "mqtt"), 0.0) == []
    late = _frames(door, faces_dir, "obama", 50)  # frames at t = 5.0 ... 5.5, no tick before them
    assert [(d.decision, d.user_id, d.factors) for d in late] == [("DENIED_NO_FACE", "obama", ("card",))]


def test_a_frame_that_fails_part_way_keeps_the_decisions_it_made(ctx, faces_dir, engine, make_settings, monkeypatch):
    """The frame closed a card window (DENIED_NO_FACE: the claim is gone) and then failed:
    the decision comes out with the error, not lost with it."""
    from facelink.device.pipeline import DecidedThenFailed

    door = _door(ctx, faces_dir, engine, make_settings, "card_and_face", window_s=5.0)
    assert door.badge(BadgeRead(OBAMA, "serial"), 0.0) == []

    def broken(_pixels):
        raise RuntimeError("detector failed")

    monkeypatch.setattr(door.engine, "detect", broken)
    with pytest.raises(DecidedThenFailed) as failed:
        door.process(_frame(faces_dir, "obama", 1), 6.0)
    assert [(d.decision, d.user_id) for d in failed.value.decisions] == [("DENIED_NO_FACE", "obama")]
    assert str(failed.value.cause) == "detector failed"
    assert door.factors.claim is None and door.tick(7.0) == []  # closed once, published once
    with pytest.raises(RuntimeError, match="detector failed"):  # nothing decided: the error itself
        door.process(_frame(faces_dir, "obama", 2), 8.0)
