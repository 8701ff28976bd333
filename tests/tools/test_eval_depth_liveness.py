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
                           "holed print"}
    assert all(row["of"] == 4 for row in result.values())
    assert result["trimmed fold"]["live"] == 0 and result["holed print"]["live"] == 0
    assert sum(result["holed print"]["failed_scores"].values()) >= 4  # why each was refused
    everything = attacks(PassEverything(frames=3), np.random.default_rng(0), 4)
    assert all(row["live"] == 4 for row in everything.values())  # a check that passes all is counted so
