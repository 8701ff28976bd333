"""tools/eval_depth_liveness.py counts what FLAT_FACE lets through (simulated depth)."""

from __future__ import annotations

import numpy as np
from eval_depth_liveness import attacks

from facelink.device.liveness_depth import DepthRelief
from facelink.device.liveness_frozen import LIVE


class PassEverything(DepthRelief):
    def observe(self, state, depth_mm, box, landmarks):
        super().observe(state, depth_mm, box, landmarks)
        return LIVE, None


def test_the_crafted_prints_are_refused_and_counted():
    result = attacks(DepthRelief(frames=3), np.random.default_rng(0), 4)
    assert set(result) == {"trimmed fold", "fold cut at the nose", "taped fold", "taped fold, outer crease",
                           "holed print", "fold cut at the nose, hand-held"}
    assert all(row["of"] == 4 for row in result.values())
    assert result["trimmed fold"]["granted"] == 0 and result["holed print"]["granted"] == 0
    assert sum(result["holed print"]["failed_scores"].values()) >= 4  # why each was refused
    everything = attacks(PassEverything(frames=3), np.random.default_rng(0), 4)
    assert all(row["granted"] == 4 for row in everything.values())  # a check that passes all is counted so


def test_a_hand_held_print_moves_from_frame_to_frame():
    """The hand-held prints are nearer or further in each frame (up to 15 mm), the others are not."""
    from eval_depth_liveness import random_print

    def spread(kind: str) -> float:
        make, _ = random_print(np.random.default_rng(5), kind)
        frames = [make(np.random.default_rng(seed)) for seed in range(8)]
        middles = [float(np.median(f[f > 0])) for f in frames]
        return max(middles) - min(middles)

    assert spread("fold cut at the nose") <= 2.0 < 8.0 <= spread("fold cut at the nose, hand-held")
