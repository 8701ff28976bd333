"""The N-of-M rule and cooldowns, on real Track/Observation objects."""

from __future__ import annotations

from collections import deque

import numpy as np

from facelink.device.decision import DecisionPolicy
from facelink.device.tracker import Observation, Track, Tracker


def policy(**kw) -> DecisionPolicy:
    args = dict(device_id="d", collection_id="c", model_version="m", threshold=99.0,
                frames_required=3, frames_window=5, cooldown_s=10.0)
    args.update(kw)
    return DecisionPolicy(**args)


def track(tid: int = 1) -> Track:
    return Track(tid, np.array([0, 0, 10, 10.0]), 0.0, deque(maxlen=5))


def match(user: str, sim: float = 99.5) -> Observation:
    return Observation("match", user, f"face-{user}", f"ext-{user}", sim)


def test_needs_n_of_m_same_user():
    p, t = policy(), track()
    for obs in (match("ann"), Observation("nomatch", similarity=40.0), match("bob")):
        t.history.append(obs)
        assert p.decide(t, 0.0) is None  # one frame each: not enough
    t.history.append(match("ann", 99.9))
    assert p.decide(t, 0.0) is None
    t.history.append(match("ann", 99.2))
    d = p.decide(t, 0.0)
    assert d.decision == "GRANTED" and d.user_id == "ann" and d.similarity == 99.9 and d.frames_matched == 3
    t.history.append(match("ann"))
    assert p.decide(t, 0.1) is None  # one decision per track


def test_unknown_low_quality_and_spoof():
    p = policy()
    t = track()
    for s in (10.0, 20.0, 30.0):
        t.history.append(Observation("nomatch", similarity=s))
    d = p.decide(t, 0.0)
    assert d.decision == "DENIED_UNKNOWN" and d.similarity == 30.0 and d.user_id is None
    t2 = track(2)
    for _ in range(5):
        t2.history.append(Observation("lowquality", reason="SMALL_FACE"))
    assert p.decide(t2, 0.0).decision == "DENIED_LOW_QUALITY"
    t3 = track(3)
    for _ in range(3):
        t3.history.append(Observation("spoof", reason="NO_MOTION"))
    d3 = p.decide(t3, 0.0)
    assert d3.decision == "DENIED_SPOOF" and d3.reason == "NO_MOTION"


def test_cooldown_per_user():
    p = policy(frames_required=1, frames_window=1, cooldown_s=10.0)
    first, second, later = track(1), track(2), track(3)
    for t in (first, second, later):
        t.history.append(match("ann"))
    assert p.decide(first, 0.0).decision == "GRANTED"
    assert p.decide(second, 5.0) is None  # same person, new track, within cooldown
    assert p.decide(later, 11.0).decision == "GRANTED"


def test_payload_is_versioned_and_has_no_pixels():
    p = policy(frames_required=1, frames_window=1)
    t = track()
    t.history.append(match("ann"))
    payload = p.decide(t, 0.0).payload()
    assert payload["schema"] == "facelink.decision/1"
    assert {"event_id", "timestamp", "device_id", "decision", "user_id", "external_image_id",
            "similarity", "model_version"} <= set(payload)
    assert all(not isinstance(v, (bytes, np.ndarray)) for v in payload.values())


def test_tracker_follows_a_moving_face_and_forgets_old_ones():
    tr = Tracker(window=5, max_age_s=1.0)
    a = tr.update([np.array([100, 100, 50, 50.0])], 0.0)[0]
    b = tr.update([np.array([105, 102, 50, 50.0])], 0.1)[0]
    assert a.track_id == b.track_id
    c = tr.update([np.array([400, 100, 50, 50.0])], 0.2)[0]
    assert c.track_id != a.track_id
    d = tr.update([np.array([105, 102, 50, 50.0])], 5.0)[0]
    assert d.track_id not in (a.track_id, c.track_id)  # the old track expired


def test_cooldowns_survive_a_reload():
    old = policy(frames_required=1, frames_window=1)
    t = track(1)
    t.history.append(match("ann"))
    assert old.decide(t, 0.0).decision == "GRANTED"
    new = policy(frames_required=1, frames_window=1, threshold=99.5)
    new.carry_cooldowns_from(old)
    again = track(2)
    again.history.append(match("ann"))
    assert new.decide(again, 1.0) is None
