"""tools/eval_frozen_feed.py counts what FROZEN_FEED lets through when a track may start anywhere."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from eval_frozen_feed import KINDS, N_FRAMES, attack, from_start, landmarks_of
from eval_liveness import read_video

from facelink.device.liveness_frozen import FrozenFeed


def test_a_start_is_decided_as_the_door_decides(engine, faces_dir):
    """A still is refused from its first frame and from a later one, a live clip granted; a still
    with FROZEN_FEED made to pass every frame is counted as GRANTED (what the tool counts is the
    check's verdict, not a constant)."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    seen = landmarks_of(engine, attack("still", photo, np.random.default_rng(0))[:15])
    frozen = FrozenFeed()
    assert from_start(seen, 0, frozen)[0] == "DENIED_SPOOF"
    assert from_start(seen, 6, frozen)[0] == "DENIED_SPOOF"
    assert from_start(seen, 0, FrozenFeed(min_change=-1e9))[0] == "GRANTED"
    live = landmarks_of(engine, read_video(faces_dir / "video/feat_man.mp4", max_s=2.0))
    decision, at = from_start(live, 3, frozen, limit=30)
    assert decision == "GRANTED" and at < 2.0


def test_a_start_is_a_new_track_from_that_frame(engine, faces_dir):
    """What the tool is for: a track that starts later is judged on its own frames only, with a
    fresh FROZEN_FEED state. A still then a live face: from the still's first frame the track is
    refused, from the live face's first frame it is granted (and ``limit`` cuts the track)."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    still = landmarks_of(engine, attack("still", photo, np.random.default_rng(0))[:12])
    live = landmarks_of(engine, read_video(faces_dir / "video/feat_man.mp4", max_s=2.0))
    seen = still + live
    frozen = FrozenFeed()
    assert from_start(seen, 0, frozen)[0] == "DENIED_SPOOF"
    decision, at = from_start(seen, len(still), frozen)
    assert decision == "GRANTED" and at < 2.0
    assert from_start(seen, len(still), frozen, limit=2) == (None, None)  # too few frames to decide


@pytest.mark.parametrize("kind", KINDS)
def test_each_attack_changes_the_brightness_as_it_says(faces_dir, kind):
    """The rows of the table are the brightness patterns they are named after (on the face's
    unclipped mid-tones; every frame is re-encoded, so a plain still varies by noise only)."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    frames = attack(kind, photo, np.random.default_rng(0))
    assert len(frames) == N_FRAMES
    ref = frames[0].astype(np.float32)
    mid = (ref > 40) & (ref < 150)  # mid-tones of the first frame: not clipped by a 1.6x or 2.4x gain
    gain = np.array([float(f.astype(np.float32)[mid].mean() / ref[mid].mean()) for f in frames])
    steps = np.diff(gain)
    if kind in ("still", "overexposed"):  # nothing changes between frames
        assert np.abs(steps).max() < 0.01
    elif kind == "flicker 8 %":
        assert np.all(np.abs(np.abs(steps) - 0.08) < 0.02) and np.all(steps[:-1] * steps[1:] < 0)
    elif kind == "ramp +2 %":
        assert np.all(steps > 0) and abs(gain[1] - 1.02) < 0.01
    elif kind == "walk +-5 %":
        assert np.all(np.abs(np.abs(steps) / gain[:-1] - 0.05) < 0.02)
    else:  # the eval's pattern: a 5 % step a third of the way in
        assert gain[N_FRAMES // 3 + 1:].mean() > gain[:N_FRAMES // 3].mean() + 0.03
