"""NO_BLINK and FROZEN_FEED against a print whose eyes are covered for a moment (found in review).

A hand-held print of an enrolled user (the evaluation's own simulated print, tools/eval_liveness.py)
whose eyes are covered for three frames (0.2 s at 15 fps) by a skin-coloured strip -- a finger
swiped across them -- collapsed the iris model's eye contour (EAR 0.23 -> 0.12) and reopened it
within 0.8 s: by the eye aspect ratio alone, a blink. The same frames are a large change of the
aligned crop, so FROZEN_FEED is live too, and with the recommended RGB configuration (frozen feed +
blink) the print was GRANTED. Since 2026-12-06 a closure counts as a blink only if both eyes dip and
the skin round the eyes (glabella, bridge of the nose, beside the outer corners) stays as it was
(device/liveness_blink.py, ``cover_check``; measured by tools/eval_blink_cover.py, whose covers
these tests use). Two fingertips placed exactly over each eye are not stopped (README)."""

from __future__ import annotations

import cv2
import eval_blink_cover as cover
import numpy as np
import pytest

from facelink.device.assembly import build_components
from facelink.device.camera import Frame
from facelink.device.liveness_blink import Blink, BlinkState
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline
from facelink.enroll import faces, users
from facelink.models.facemesh import EyeReading


@pytest.fixture(scope="module")
def face_mesh(models_dir):
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed")
    from facelink.device.liveness import load_face_mesh
    from facelink.models.provision import provision

    provision(models_dir, tflite=True)
    return load_face_mesh(models_dir, threads=2)


def _door_run(ctx, faces_dir, engine, make_settings, eyes: cover.Cover | None) -> list[tuple[str, str | None]]:
    """The simulated hand-held print of obama (enrolled) at a door with frozen feed + blink; with
    ``eyes``, its eyes covered by that cover on frames 20-22."""
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    prints = cover.covered_print(engine, cv2.imread(str(faces_dir / "people/obama/1.jpg")), eyes, 5)
    settings = make_settings(liveness={"enabled": True, "frozen_feed": True, "require_blink": True})
    door = DoorPipeline(engine, index, build_components(settings, engine))
    return [(d.decision, d.reason) for i, px in enumerate(prints) for d in door.process(Frame(px, i / 15, i), i / 15)]


def _blinks(blink: Blink, readings: list[EyeReading | None], fps: float = 15.0) -> BlinkState:
    state = BlinkState()
    for i, r in enumerate(readings):
        blink.observe(state, r, i / fps)
    return state


def test_the_print_alone_is_refused(ctx, faces_dir, engine, make_settings, face_mesh):
    assert _door_run(ctx, faces_dir, engine, make_settings, None) == [("DENIED_SPOOF", "FROZEN_FEED")]


@pytest.mark.parametrize("name", ["flat", "textured", "other_skin", "dark_finger"])
def test_a_print_whose_eyes_are_covered_for_a_moment_is_not_granted(ctx, faces_dir, engine, make_settings,
                                                                     face_mesh, name):
    """flat: the review's strip; textured: blotchy, noisy skin; other_skin: another photo's
    forehead (wrinkles, pores); dark_finger: a rounded, shaded, darker finger with soft edges. Each
    was GRANTED before the cover check."""
    decisions = _door_run(ctx, faces_dir, engine, make_settings, cover.COVERS[name])
    assert decisions and all(d == "DENIED_SPOOF" for d, _ in decisions), decisions


def test_a_cover_over_one_eye_is_no_blink(engine, face_mesh, faces_dir):
    """A blink closes both eyes: a fingertip over one eye of the print dipped the mean EAR below
    0.7 of its baseline (0.245 -> 0.18) and read as a blink."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    readings = cover.readings(engine, face_mesh, cover.covered_print(engine, photo, cover.one_eye, 5))
    assert _blinks(Blink(cover_check=False), readings).blinks == 1  # the attack, as the rule saw it before
    state = _blinks(Blink(), readings)
    assert state.blinks == 0 and state.not_blinks == {"one_eye": 1}


def test_a_textured_strip_across_the_eyes_is_no_blink(engine, face_mesh, faces_dir):
    """The skin beside the eyes and over the bridge of the nose no longer matches the open frame's."""
    photo = cv2.imread(str(faces_dir / "people/kit_harington/1.jpg"))
    readings = cover.readings(engine, face_mesh, cover.covered_print(engine, photo, cover.textured, 9))
    assert _blinks(Blink(cover_check=False), readings).blinks == 1
    state = _blinks(Blink(), readings)
    assert state.blinks == 0 and state.not_blinks == {"face_changed": 1}
    assert Blink.report(state)["last_still_match"] < 0.9


def test_a_real_blink_still_counts(engine, face_mesh, models_dir):
    """Real footage: the woman of the sample video (its 4th 5 s clip at 15 fps, as
    tools/eval_liveness.py cuts it) blinks once, smiling and turning her head; the skin round her
    eyes still matches the open frame's (0.97, threshold 0.9)."""
    import eval_liveness as ev

    clip = ev.door_videos(models_dir)["pexels_woman clip 4"]
    state = _blinks(Blink(), cover.readings(engine, face_mesh, clip))
    assert state.blinks == 1 and state.not_blinks == {}
    assert Blink.report(state)["last_still_match"] >= 0.95


def test_a_closure_that_cannot_be_compared_is_no_blink():
    """Without the mesh crop (nothing to compare) a dip and a reopening is not taken as a blink."""
    ears = [0.3] * 6 + [0.1, 0.1] + [0.3] * 4
    readings = [EyeReading(e, e, e, 0.9) for e in ears]
    assert _blinks(Blink(cover_check=False), readings).blinks == 1
    state = _blinks(Blink(), readings)
    assert state.blinks == 0 and state.not_blinks == {"not_compared": 1}


def test_covers_are_drawn_where_the_eyes_are(engine, faces_dir):
    """The evaluation's covers change the frame only round the eyes, and only on frames 20-22."""
    photo = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    plain = cover.covered_print(engine, photo, None, 5)
    covered = cover.covered_print(engine, photo, cover.textured, 5)
    changed = [i for i, (a, b) in enumerate(zip(plain, covered)) if not np.array_equal(a, b)]
    assert changed == list(cover.COVERED)
    lm = engine.detect(plain[21])[0].detection.landmarks
    rows = np.nonzero(np.any(plain[21] != covered[21], axis=(1, 2)))[0]
    d = float(np.linalg.norm(lm[1] - lm[0]))
    assert rows.min() >= (lm[0][1] + lm[1][1]) / 2 - 0.12 * d and rows.max() <= (lm[0][1] + lm[1][1]) / 2 + 0.12 * d


@pytest.mark.xfail(strict=True, reason="known weakness (README, NO_BLINK): a cover confined to the eye openings "
                                        "(two fingertips) leaves the skin round the eyes as it was")
def test_two_fingertips_over_the_eyes_are_not_granted(ctx, faces_dir, engine, make_settings, face_mesh):
    decisions = _door_run(ctx, faces_dir, engine, make_settings, cover.two_tips)
    assert "GRANTED" not in [d for d, _ in decisions], decisions
