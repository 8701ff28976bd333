"""tools/eval_frozen_feed.py counts what FROZEN_FEED lets through when a track may start anywhere."""

from __future__ import annotations

import cv2
import numpy as np
from eval_frozen_feed import attack, from_start, landmarks_of
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
