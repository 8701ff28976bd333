"""tools/eval_liveness.py (README's liveness table) judges as the door does: its settings' checks,
N of M and quality gate."""

from __future__ import annotations

import eval_liveness as ev
import pytest

from facelink.config import load_settings
from facelink.device.assembly import quality_gate
from facelink.models.quality import QualityGate

LIVE = {"frozen": ("live", None), "blink": ("live", None)}


def test_the_tool_takes_the_doors_checks_rule_and_gate_from_the_settings():
    settings = load_settings()
    m, ls = settings.matching, settings.liveness
    m.frames_required, m.frames_window, m.min_face_px = 2, 4, 90
    ls.frozen_feed_min_change, ls.blink_window_s, ls.blink_close_ratio = 0.5, 3.0, 0.6
    door = ev.door_checks(settings)
    assert (door.required, door.window, door.frozen.min_change) == (2, 4, 0.5)
    assert (door.blink.window_s, door.blink.close_ratio) == (3.0, 0.6)
    assert door.gate == quality_gate(m) and door.gate.min_face_px == 90


def test_a_track_is_decided_with_the_doors_n_of_m():
    door = ev.door_checks(load_settings())
    assert door.decide([LIVE] * 5, ("frozen", "blink")) == ("GRANTED", 2 / ev.FPS)  # 3 of 5
    one = ev.DoorChecks(door.frozen, door.blink, door.gate, 1, 1)
    assert one.decide([LIVE] * 5, ("frozen", "blink")) == ("GRANTED", 0.0)


def test_a_row_reads_the_gated_or_the_ungated_verdicts():
    """Presentations whose every face the gate refused: with the gate nothing is granted (and
    the bona fide clip is DENIED_LOW_QUALITY), without it every one passes."""
    door = ev.door_checks(load_settings())
    judged = ev.Judged(door=[{"lowquality": "SMALL_FACE"}] * 10, ungated=[LIVE] * 10)
    presentations = [(kind, "x", judged) for kind in ("bona fide", *ev.KINDS)]
    checks = ev.CONFIGS["frozen_feed + blink (recommended RGB)"]
    gated = ev.config_row(presentations, door, checks, True, {"x": None})
    assert all(gated[f"APCER {k}"] == 0 for k in ev.KINDS) and gated["BPCER"] == 1.0
    assert gated["bona_fide_outcomes"] == {"x": "DENIED_LOW_QUALITY"}
    off = ev.config_row(presentations, door, checks, False, {"x": 2 / ev.FPS})
    assert all(off[f"APCER {k}"] == 1 for k in ev.KINDS) and off["BPCER"] == 0
    assert off["added_s_median"] == 0.0


def test_frames_the_gate_refuses_reach_no_check(engine, faces_dir, models_dir):
    """The real engine, gate and checks on the live sample clip: a gate that refuses every face
    makes the door's reading all low quality (DENIED_LOW_QUALITY), the ungated one is granted;
    with the door's own gate nothing is refused and both readings are the same."""
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed")
    from facelink.device.liveness import load_face_mesh
    from facelink.models.provision import provision

    provision(models_dir, tflite=True)
    mesh = load_face_mesh(models_dir, threads=2)
    clip = ev.read_video(faces_dir / "video/feat_man.mp4", max_s=2.0)
    door = ev.door_checks(load_settings())
    m = load_settings().matching
    nobody = QualityGate(min_face_px=10_000, max_abs_yaw=m.max_abs_yaw, max_abs_pitch=m.max_abs_pitch,
                         min_sharpness=m.min_sharpness, min_brightness=m.min_brightness)
    cost = {"detect": [], "frozen_feed": [], "blink (mesh + 2x iris)": []}
    refused = ev.run(engine, mesh, clip, cost, ev.DoorChecks(door.frozen, door.blink, nobody))
    faces = sum(v is not None for v in refused.door)
    assert faces > 20 and refused.refused == faces
    assert door.decide(refused.door, ("frozen",))[0] == "DENIED_LOW_QUALITY"
    assert door.decide(refused.ungated, ("frozen",))[0] == "GRANTED"
    passed = ev.run(engine, mesh, clip, cost, door)
    assert passed.refused == 0 and passed.door == passed.ungated
    assert door.decide(passed.door, ("frozen",))[0] == "GRANTED"
