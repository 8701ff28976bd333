"""tools/eval_frozen_feed.py counts what FROZEN_FEED lets through when a track may start anywhere."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from eval_frozen_feed import (
    KINDS,
    MIN_LEFT,
    N_FRAMES,
    STEP,
    DoorRule,
    Seen,
    attack,
    attack_rows,
    bona_fide_row,
    count_attack,
    count_bona_fide,
    door_rule,
    from_start,
    observe_frames,
    ungated,
)
from eval_liveness import FPS, read_video

from facelink.config import load_settings
from facelink.device.assembly import quality_gate
from facelink.device.liveness_frozen import FrozenFeed
from facelink.models.quality import QualityGate


def test_a_start_is_decided_as_the_door_decides(engine, faces_dir):
    """A still is refused from its first frame and from a later one, a live clip granted; a still
    with FROZEN_FEED made to pass every frame is counted as GRANTED (what the tool counts is the
    check's verdict, not a constant)."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    seen = observe_frames(engine, attack("still", photo, np.random.default_rng(0))[:15])
    rule = DoorRule(FrozenFeed())
    assert from_start(seen, 0, rule)[0] == "DENIED_SPOOF"
    assert from_start(seen, 6, rule)[0] == "DENIED_SPOOF"
    assert from_start(seen, 0, DoorRule(FrozenFeed(min_change=-1e9)))[0] == "GRANTED"
    live = observe_frames(engine, read_video(faces_dir / "video/feat_man.mp4", max_s=2.0))
    decision, at = from_start(live, 3, rule, limit=30)
    assert decision == "GRANTED" and at < 2.0


def test_a_start_is_a_new_track_from_that_frame(engine, faces_dir):
    """What the tool is for: a track that starts later is judged on its own frames only, with a
    fresh FROZEN_FEED state. A still then a live face: from the still's first frame the track is
    refused, from the live face's first frame it is granted (and ``limit`` cuts the track)."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    still = observe_frames(engine, attack("still", photo, np.random.default_rng(0))[:12])
    live = observe_frames(engine, read_video(faces_dir / "video/feat_man.mp4", max_s=2.0))
    seen = still + live
    rule = DoorRule(FrozenFeed())
    assert from_start(seen, 0, rule)[0] == "DENIED_SPOOF"
    decision, at = from_start(seen, len(still), rule)
    assert decision == "GRANTED" and at < 2.0
    assert from_start(seen, len(still), rule, limit=2) == (None, None)  # too few frames to decide


def test_the_door_rule_and_quality_gate_decide_a_start(engine, faces_dir):
    """The start is judged with the door's N of M (from the settings, not a constant) and its
    quality gate: a frame the gate refuses is recorded unusable and shown to no check, so a
    window of them is DENIED_LOW_QUALITY, not a FROZEN_FEED verdict."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    frames = attack("still", photo, np.random.default_rng(0))[:12]
    passing = FrozenFeed(min_change=-1e9)  # every comparison live
    seen = observe_frames(engine, frames, quality_gate(load_settings().matching))
    assert all(s is not None and s.low_quality is None for s in seen)  # the door's gate passes them
    three_of_five = from_start(seen, 0, DoorRule(passing, 3, 5))
    one_of_one = from_start(seen, 0, DoorRule(passing, 1, 1))
    assert three_of_five[0] == one_of_one[0] == "GRANTED" and one_of_one[1] < three_of_five[1]
    blurred = [cv2.GaussianBlur(f, (0, 0), 6) for f in frames]  # too soft for the door's gate
    unusable = observe_frames(engine, blurred, quality_gate(load_settings().matching))
    assert all(s is not None and s.low_quality for s in unusable)
    assert from_start(unusable, 0, DoorRule(passing))[0] == "DENIED_LOW_QUALITY"


def _judged_by_start(decisions: dict[int, str | None]):
    return lambda seen, k: (decisions.get(k), 0.1 * k if decisions.get(k) else None)


def test_count_attack_counts_only_granted_starts_of_presentations_with_enough_faces():
    """Counting, on its own: starts every STEP frames while MIN_LEFT remain; only GRANTED counts
    (not an undecided start, not another decision); a presentation with too few faces is left out."""
    usable = Seen(np.zeros((2, 2, 3), np.uint8), np.zeros((5, 2)))  # stands in for a seen frame
    frames = [usable] * 15
    starts = list(range(0, 15 - MIN_LEFT + 1, STEP))
    assert starts == [0, 3, 6]
    judged = {0: "DENIED_SPOOF", 3: None, 6: "GRANTED"}
    few = [None] * 10 + [usable] * (MIN_LEFT - 1)
    refused = [replace(usable, low_quality="SMALL_BOUNDING_BOX")] * 15  # the gate refuses every face
    row = count_attack([frames, frames, few, refused], _judged_by_start(judged))
    assert row == {"presentations": 2, "granted from a start": 2, "starts": 6, "starts granted": 2, "left out": 2}
    assert count_attack([frames], _judged_by_start({}))["starts granted"] == 0
    assert count_attack([ungated(refused)], _judged_by_start(judged))["presentations"] == 1


def test_count_bona_fide_counts_a_start_not_granted_as_refused():
    """Any start not GRANTED within the window is refused: denied for any reason, or undecided."""
    frames = [object()] * 18
    within = 6  # starts 0, 3, 6, 9, 12
    judged = {0: "GRANTED", 3: "DENIED_SPOOF", 6: "GRANTED", 9: "DENIED_LOW_QUALITY", 12: None}
    row = count_bona_fide([frames], _judged_by_start(judged), within)
    assert (row["clips"], row["starts"], row["starts not granted within 2 s"]) == (1, 5, 3)
    assert row["median s to GRANTED"] == 0.3  # of 0.0 and 0.6


class _Spy:
    """A FROZEN_FEED stand-in that says live and keeps the frames it was shown."""

    def __init__(self) -> None:
        self.frames: list = []

    def new_state(self) -> None:
        return None

    def observe(self, state, frame, landmarks):
        self.frames.append(frame)
        return "live", None


def test_a_frame_the_gate_refuses_is_shown_to_no_check():
    """As in the door (pipeline._observe), a refused face is recorded and not shown to FROZEN_FEED:
    its crop must not become the reference the next frames are compared with."""
    usable = Seen(np.zeros((2, 2, 3), np.uint8), np.zeros((5, 2)))
    refused = Seen(np.ones((2, 2, 3), np.uint8), np.zeros((5, 2)), low_quality="EXTREME_POSE")
    spy = _Spy()
    assert from_start([usable, refused, usable, refused, usable], 0, DoorRule(spy))[0] == "GRANTED"
    assert len(spy.frames) == 3 and all(f is usable.frame for f in spy.frames)


def test_the_tool_takes_the_doors_rule_and_gate_from_the_settings():
    settings = load_settings()
    m = settings.matching
    m.frames_required, m.frames_window, m.min_face_px = 2, 4, 90
    settings.liveness.frozen_feed_min_change = 0.5
    rule, gate = door_rule(settings)
    assert (rule.required, rule.window, rule.frozen.min_change) == (2, 4, 0.5)
    assert gate == quality_gate(m) and gate.min_face_px == 90


def test_the_rows_are_judged_through_the_gate_given(engine, faces_dir):
    """main's rows: a gate that refuses every face leaves the attack out of the gated row (not
    of the ungated one) and refuses every bona fide start; the door's own gate passes them."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    m = load_settings().matching
    rule, door_gate = DoorRule(FrozenFeed()), quality_gate(m)
    nobody = QualityGate(min_face_px=10_000, max_abs_yaw=m.max_abs_yaw, max_abs_pitch=m.max_abs_pitch,
                         min_sharpness=m.min_sharpness, min_brightness=m.min_brightness)
    rows, ungated_rows = attack_rows(engine, [photo], 1, rule, nobody, kinds=("still",))
    assert rows["still"]["left out"] == 1 and rows["still"]["presentations"] == 0
    assert ungated_rows["still"]["presentations"] == 1
    clip = read_video(faces_dir / "video/feat_man.mp4", max_s=3.0)
    within = int(2.0 * FPS)
    refused = bona_fide_row(engine, [clip], rule, nobody, within)
    assert refused["starts"] > 0 and refused["starts not granted within 2 s"] == refused["starts"]
    assert bona_fide_row(engine, [clip], rule, door_gate, within)["starts not granted within 2 s"] == 0


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
