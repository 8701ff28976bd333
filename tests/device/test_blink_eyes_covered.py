"""NO_BLINK and FROZEN_FEED against a print whose eyes are covered for a moment (found in review).

README says the blink check "stops printed photos". A hand-held print of an enrolled user (the
evaluation's own simulated print, tools/eval_liveness.py) whose eyes are covered for three frames
(0.2 s at 15 fps) by a skin-coloured strip -- a finger swiped across them -- reads as a blink: the
iris model's eye contour collapses (EAR 0.23 -> 0.12) and reopens within 0.8 s. The same frames
are a large change of the aligned crop, so FROZEN_FEED is live too. With the recommended RGB
configuration (frozen feed + blink) the print is GRANTED; without the strip it is DENIED_SPOOF.
No live eyes are involved (unlike the documented print with the eyes cut out)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facelink.device.assembly import build_components
from facelink.device.camera import Frame
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline
from facelink.enroll import faces, users


@pytest.fixture(scope="module")
def with_mesh(models_dir):
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed")
    from facelink.models.provision import provision

    provision(models_dir, tflite=True)


def _cover_eyes(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A strip the colour of the print's cheek across both eyes (a finger)."""
    out = frame.copy()
    left, right, nose = landmarks[0], landmarks[1], landmarks[2]
    d = float(np.linalg.norm(right - left))
    cy = (left[1] + right[1]) / 2
    skin = out[int(nose[1] + 0.1 * d), int(nose[0] + 0.35 * d)].tolist()
    cv2.rectangle(out, (int(min(left[0], right[0]) - 0.45 * d), int(cy - 0.11 * d)),
                  (int(max(left[0], right[0]) + 0.45 * d), int(cy + 0.11 * d)), skin, -1)
    return out


def _door_run(ctx, faces_dir, engine, make_settings, cover: bool) -> list[tuple[str, str | None]]:
    """The simulated hand-held print of obama (enrolled) at a door with frozen feed + blink; with
    ``cover``, its eyes covered on frames 20-22."""
    import eval_liveness as ev

    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    prints = ev.print_attack(cv2.imread(str(faces_dir / "people/obama/1.jpg")),
                             np.full((480, 640, 3), 100, np.uint8), np.random.default_rng(5), 75)
    if cover:
        prints = [_cover_eyes(px, engine.detect(px)[0].detection.landmarks) if 20 <= i < 23 else px
                  for i, px in enumerate(prints)]
    settings = make_settings(liveness={"enabled": True, "frozen_feed": True, "require_blink": True})
    door = DoorPipeline(engine, index, build_components(settings, engine))
    return [(d.decision, d.reason) for i, px in enumerate(prints) for d in door.process(Frame(px, i / 15, i), i / 15)]


def test_the_print_alone_is_refused(ctx, faces_dir, engine, make_settings, with_mesh):
    assert _door_run(ctx, faces_dir, engine, make_settings, cover=False) == [("DENIED_SPOOF", "FROZEN_FEED")]


@pytest.mark.xfail(strict=True, reason="known weakness (README, NO_BLINK): a quick cover of a print's eyes "
                                        "reads as a blink and is a live change for FROZEN_FEED")
def test_a_print_whose_eyes_are_covered_for_a_moment_is_not_granted(ctx, faces_dir, engine, make_settings,
                                                                     with_mesh):
    decisions = _door_run(ctx, faces_dir, engine, make_settings, cover=True)
    assert "GRANTED" not in [d for d, _ in decisions], decisions
