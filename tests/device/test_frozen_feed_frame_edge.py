"""FROZEN_FEED on a still whose face is cut by the frame edge (found in review): the aligned 112x112
crop then holds the warp's black border, whose edge moves across the crop as the still is panned
-- no rigid motion of the face, so registration cannot remove it, and it scored as a live change
(2.5-9.7 against the 0.42 threshold). With the default settings (frozen feed alone) an injected
still of an enrolled user, panned 3 px a frame with its face partly off the left edge, was
GRANTED on its fourth frame; the same still fully inside the frame is DENIED_SPOOF.

Not fixed (README, FROZEN_FEED): not comparing such frames refused the sample door videos' woman
(her aligned crop leaves the 640x360 frame in most frames: BPCER 0.0 -> 0.4), and comparing only
where both crops show the image brought these scores to 0.3-0.54 (landmark jitter of a face cut
by the edge remains) but raised the scores of the evaluation's static stills (max 0.387 -> 0.72;
frozen-feed ramp starts granted 131 -> 137 of 273). Hence a strict xfail."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facelink.device.assembly import build_components
from facelink.device.camera import Frame
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline
from facelink.enroll import faces, users


def _panned_still(faces_dir, x0: int, n: int = 15) -> list[np.ndarray]:
    """feat_man/photo.jpg injected into a 640x480 feed (noise sigma 1), moved 3 px a frame."""
    photo = cv2.imread(str(faces_dir / "people/feat_man/photo.jpg"))
    scale = 300 / max(photo.shape[:2])
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(1)
    frames = []
    for i in range(n):
        canvas = np.full((480, 640, 3), 100, np.uint8)
        cv2.warpAffine(photo, np.float32([[1, 0, x0 + 3 * i], [0, 1, 90]]), (640, 480), dst=canvas,
                       borderMode=cv2.BORDER_TRANSPARENT)
        frames.append(np.clip(canvas + rng.normal(0, 1, canvas.shape), 0, 255).astype(np.uint8))
    return frames


def _decisions(ctx, faces_dir, engine, make_settings, frames) -> list[tuple[str, str | None]]:
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "feat_man")
    faces.index_faces(ctx, "door", faces_dir / "people/feat_man/1.jpg", "badge", user_id="feat_man")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    settings = make_settings()  # the defaults: liveness on, frozen feed alone
    assert settings.liveness.enabled and settings.liveness.frozen_feed and not settings.liveness.require_blink
    door = DoorPipeline(engine, index, build_components(settings, engine))
    return [(d.decision, d.reason) for i, px in enumerate(frames) for d in door.process(Frame(px, i / 15, i), i / 15)]


def test_a_still_inside_the_frame_is_a_frozen_feed(ctx, faces_dir, engine, make_settings):
    assert _decisions(ctx, faces_dir, engine, make_settings, _panned_still(faces_dir, 150)) == \
        [("DENIED_SPOOF", "FROZEN_FEED")]


@pytest.mark.xfail(strict=True, reason="known weakness (README, FROZEN_FEED): a panned still cut by the frame "
                                        "edge scores as a live change")
def test_a_still_cut_by_the_frame_edge_is_not_granted(ctx, faces_dir, engine, make_settings):
    frames = _panned_still(faces_dir, -90)
    decisions = _decisions(ctx, faces_dir, engine, make_settings, frames)
    assert "GRANTED" not in [d for d, _ in decisions], decisions
