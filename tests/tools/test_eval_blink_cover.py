"""tools/eval_blink_cover.py (README, NO_BLINK) judges the same readings with the cover check and
without it, and reports why a closure that reopened in time was no blink."""

from __future__ import annotations

from eval_blink_cover import closures

from facelink.device.liveness_blink import Blink
from facelink.models.facemesh import EyeReading


def test_closures_are_reported_with_their_verdict():
    ears = [(0.3, 0.3)] * 6 + [(0.1, 0.3), (0.1, 0.3)] + [(0.3, 0.3)] * 4 + [(0.1, 0.1)] + [(0.3, 0.3)] * 3
    readings = [EyeReading((a + b) / 2, a, b, 0.9) for a, b in ears]
    before = closures(Blink(cover_check=False), readings, 15.0)
    assert before["blinks"] == 2 and [e["verdict"] for e in before["closures"]] == ["blink", "blink"]
    now = closures(Blink(), readings, 15.0)
    assert now["blinks"] == 0
    # one eye only; then both eyes, but no mesh crop to compare the skin round them
    assert [(e["frame"], e["verdict"], e["still"]) for e in now["closures"]] == [(8, "one_eye", None),
                                                                                (13, "not_compared", None)]
