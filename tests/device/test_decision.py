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
    return Track(tid, np.array([0, 0, 10, 10.0]), 0.0, deque())


def decide(p: DecisionPolicy, t: Track, now: float):
    """What the pipeline does: decide, then publish unless the cooldown holds it back."""
    d = p.decide(t)
    return d if d is not None and p.admit(d, now) else None


def match(user: str, sim: float = 99.5) -> Observation:
    return Observation("match", user, f"face-{user}", f"ext-{user}", sim)


def test_needs_n_of_m_same_user():
    p, t = policy(), track()
    for obs in (match("ann"), Observation("nomatch", similarity=40.0), match("bob")):
        p.record(t, obs)
        assert decide(p, t, 0.0) is None  # one frame each: not enough
    p.record(t, match("ann", 99.9))
    assert decide(p, t, 0.0) is None
    p.record(t, match("ann", 99.2))
    d = decide(p, t, 0.0)
    assert d.decision == "GRANTED" and d.user_id == "ann" and d.similarity == 99.9 and d.frames_matched == 3
    p.record(t, match("ann"))
    assert decide(p, t, 0.1) is None  # one decision per track


def test_unknown_low_quality_and_spoof():
    p = policy()
    t = track()
    for s in (10.0, 20.0, 30.0):
        p.record(t, Observation("nomatch", similarity=s))
    d = decide(p, t, 0.0)
    assert d.decision == "DENIED_UNKNOWN" and d.similarity == 30.0 and d.user_id is None
    t2 = track(2)
    for _ in range(5):
        p.record(t2, Observation("lowquality", reason="SMALL_BOUNDING_BOX"))
    assert decide(p, t2, 0.0).decision == "DENIED_LOW_QUALITY"
    t3 = track(3)
    for _ in range(3):
        p.record(t3, Observation("spoof", reason="NO_MOTION"))
    d3 = decide(p, t3, 0.0)
    assert d3.decision == "DENIED_SPOOF" and d3.reason == "NO_MOTION"


def test_cooldown_per_user():
    p = policy(frames_required=1, frames_window=1, cooldown_s=10.0)
    first, second, later = track(1), track(2), track(3)
    for t in (first, second, later):
        p.record(t, match("ann"))
    assert decide(p, first, 0.0).decision == "GRANTED"
    assert decide(p, second, 5.0) is None  # same person, new track, within cooldown
    assert decide(p, later, 11.0).decision == "GRANTED"


def test_payload_is_versioned_and_has_no_pixels():
    p = policy(frames_required=1, frames_window=1)
    t = track()
    p.record(t, match("ann"))
    payload = decide(p, t, 0.0).payload()
    assert payload["schema"] == "facelink.decision/1"
    assert {"event_id", "timestamp", "device_id", "decision", "user_id", "external_image_id",
            "similarity", "model_version"} <= set(payload)
    assert all(not isinstance(v, (bytes, np.ndarray)) for v in payload.values())


def test_tracker_follows_a_moving_face_and_forgets_old_ones():
    tr = Tracker(max_age_s=1.0)
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
    old.record(t, match("ann"))
    assert decide(old, t, 0.0).decision == "GRANTED"
    new = policy(frames_required=1, frames_window=1, threshold=99.5)
    new.carry_cooldowns_from(old)
    again = track(2)
    new.record(again, match("ann"))
    assert decide(new, again, 1.0) is None


def test_three_of_three_counts_only_the_last_three_frames():
    """N-of-M has one owner: the policy counts N in its own window, whatever the track holds."""
    p, t = policy(frames_required=3, frames_window=3), track()
    for obs in (match("ann"), Observation("nomatch", similarity=40.0), match("ann"),
                Observation("nomatch", similarity=41.0), match("ann")):
        p.record(t, obs)
        d = p.decide(t)
        assert d is None or d.decision != "GRANTED", [o.kind for o in t.history]
    assert len(t.history) == 3
    for _ in range(2):
        p.record(t, match("ann"))
    assert p.decide(t).decision == "GRANTED"  # three matching frames in a row do


def test_a_decision_held_back_by_the_cooldown_still_settles_the_track():
    p = policy(frames_required=1, frames_window=1, cooldown_s=10.0)
    first, second = track(1), track(2)
    for t in (first, second):
        p.record(t, match("ann"))
    assert p.admit(p.decide(first), 0.0)
    held = p.decide(second)
    assert held.decision == "GRANTED" and not p.admit(held, 5.0)  # decided, not published
    assert second.decided == "GRANTED"
    p.record(second, match("ann"))
    assert p.decide(second) is None  # the track keeps its decision after the cooldown too
