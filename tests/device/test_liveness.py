"""Presentation-attack checks on real photos and the sample door video (real models)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from facelink.device.liveness import LivenessChecker, load_face_mesh
from facelink.device.liveness_blink import NO_BLINK, WAITING, Blink
from facelink.device.liveness_frozen import FROZEN_FEED, LIVE, NOT_COMPARED, PENDING, SPOOF, FrozenFeed

PHOTOS = ["obama/1.jpg", "biden/1.jpg", "feat_man/photo.jpg"]


def door_size(img: np.ndarray, side: int = 640) -> np.ndarray:
    scale = side / max(img.shape[:2])
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else img


def video_frames(path, step: int = 2, limit: int = 72) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    while len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def degraded(img: np.ndarray, rng, sigma: float = 0.0, jpeg: int = 0, jitter: float = 0.0) -> np.ndarray:
    """A re-streamed copy of a still: sub-pixel jitter, sensor-like noise, JPEG re-encoding."""
    out = img.astype(np.float32)
    if jitter:
        dx, dy = rng.uniform(-jitter, jitter, 2)
        out = cv2.warpAffine(out, np.float32([[1, 0, dx], [0, 1, dy]]), (img.shape[1], img.shape[0]),
                             borderMode=cv2.BORDER_REFLECT)
    if sigma:
        out = out + rng.normal(0.0, sigma, out.shape)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if jpeg:
        out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_COLOR)
    return out


def frozen_verdicts(engine, frames: list[np.ndarray]) -> list[tuple[str, str | None]]:
    check = FrozenFeed()
    state = check.new_state()
    out = []
    for frame in frames:
        faces = engine.detect(frame)
        assert faces, "the test images hold a face"
        out.append(check.observe(state, frame, faces[0].detection.landmarks))
    return out


@pytest.mark.parametrize("sigma,jpeg,jitter", [(0, 0, 0), (0.5, 0, 0), (1, 0, 0), (2, 0, 0), (0, 75, 0),
                                               (2, 75, 0), (0, 0, 2), (2, 75, 2)])
def test_injected_still_is_frozen_feed_despite_noise_reencoding_and_jitter(engine, faces_dir, sigma, jpeg, jitter):
    rng = np.random.default_rng(7)
    for name in PHOTOS:
        photo = door_size(cv2.imread(str(faces_dir / "people" / name)))
        verdicts = frozen_verdicts(engine, [degraded(photo, rng, sigma, jpeg, jitter) for _ in range(6)])
        assert all(state != LIVE for state, _ in verdicts), (name, verdicts)
        assert verdicts[-1] == (SPOOF, FROZEN_FEED), (name, verdicts)
        assert verdicts[0] == (PENDING, NOT_COMPARED)  # nothing to compare with: never "live"


def exposed(img: np.ndarray, gain: float, gamma: float) -> np.ndarray:
    """The still as auto-exposure shows it: a gamma and a gain over the whole image (clipped)."""
    return np.clip(255.0 * (img.astype(np.float32) / 255.0) ** gamma * gain, 0, 255).astype(np.uint8)


def test_injected_still_is_frozen_feed_while_its_exposure_hunts(engine, faces_dir):
    """Auto-exposure hunting over a still (gain flickering 4 %, a 5 % step, gamma 0.95 on every
    third frame; noise and JPEG as re-streamed): still FROZEN_FEED. Before the tone match, any
    brightness change scored as a live face (a 4 % flicker or one 5 % step granted a photo)."""
    rng = np.random.default_rng(11)
    for name in PHOTOS:  # feat_man/photo.jpg clips a colour channel when brighter
        photo = door_size(cv2.imread(str(faces_dir / "people" / name)))
        frames = [degraded(exposed(photo, 1.0 + 0.04 * (i % 2) + (0.05 if i >= 3 else 0.0),
                                   0.95 if i % 3 == 0 else 1.0), rng, 1.0, 85) for i in range(8)]
        verdicts = frozen_verdicts(engine, frames)
        assert all(state != LIVE for state, _ in verdicts), (name, verdicts)
        assert verdicts[-1] == (SPOOF, FROZEN_FEED), (name, verdicts)


@pytest.mark.parametrize("seed", [2, 11])
def test_one_changed_frame_of_a_still_does_not_make_it_live(engine, faces_dir, seed):
    """A still whose exposure hunts (tools/eval_liveness.py's own attack; this photo clips a colour
    channel when brighter) now and then scores one comparison over the threshold. One such score
    made the next three frames live, and three live frames of five are a GRANTED; two of the last
    three comparisons must now reach it. (Two high scores close together still make a frame or
    two live -- these seeds are the worst of ten for this photo -- never three of five. Another
    photo still beats it: the next test.)"""
    from eval_liveness import still_attack

    photo = cv2.imread(str(faces_dir / "people/feat_man/photo.jpg"))
    frames = still_attack(photo, np.full((360, 640, 3), 100, np.uint8), np.random.default_rng(seed), 60, exposure=True)
    check = FrozenFeed()
    state = check.new_state()
    live, high = [], 0
    for frame in frames:
        live.append(check.observe(state, frame, engine.detect(frame)[0].detection.landmarks)[0] == LIVE)
        high += state.scores[-1] >= check.min_change if state.scores else 0
    assert high >= 5, high  # the attack's changed frames
    assert max(sum(live[i:i + 5]) for i in range(len(live))) <= 2, live


@pytest.mark.xfail(strict=True, reason="known weakness (README, FROZEN_FEED): the moving edge of a clipped "
                   "area scores as change; obama/3.jpg's exposure-hunting still is live 3-5 frames of 5")
def test_a_still_whose_clipped_area_moves_is_not_live(engine, faces_dir):
    """A review (helper-38): on obama/3.jpg the same attack is live on 3-5 of 5 frames for every
    one of ten seeds, two of three comparisons or not: the edge of the clipped (saturated) area
    moves with each frame's noise and scores as change. Kept as an expected failure, so that the
    day it passes is noticed."""
    from eval_liveness import still_attack

    photo = cv2.imread(str(faces_dir / "people/obama/3.jpg"))
    frames = still_attack(photo, np.full((360, 640, 3), 100, np.uint8), np.random.default_rng(0), 60, exposure=True)
    check = FrozenFeed()
    state = check.new_state()
    live = [check.observe(state, f, engine.detect(f)[0].detection.landmarks)[0] == LIVE for f in frames]
    assert max(sum(live[i:i + 5]) for i in range(len(live))) <= 2, live


def test_live_sample_video_is_not_frozen(engine, faces_dir):
    """The sample door video at the door's 15 fps: live within a few frames, never FROZEN_FEED."""
    verdicts = frozen_verdicts(engine, video_frames(faces_dir / "video/feat_man.mp4"))
    assert all(state != SPOOF for state, _ in verdicts), verdicts
    assert verdicts[0] == (PENDING, NOT_COMPARED)
    first_live = next(i for i, (state, _) in enumerate(verdicts) if state == LIVE)
    assert first_live <= 3, verdicts
    assert sum(state == LIVE for state, _ in verdicts) >= len(verdicts) - 3


def test_blank_crop_cannot_be_compared(engine, faces_dir):
    photo = door_size(cv2.imread(str(faces_dir / "people/obama/1.jpg")))
    landmarks = engine.detect(photo)[0].detection.landmarks
    check = FrozenFeed()
    state = check.new_state()
    black = np.zeros_like(photo)
    assert [check.observe(state, black, landmarks) for _ in range(4)] == [(PENDING, NOT_COMPARED)] * 4
    assert check.report(state)["compared"] == 0


@pytest.fixture(scope="module")
def face_mesh(models_dir):
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed")
    from facelink.models.provision import provision

    provision(models_dir, tflite=True)
    return load_face_mesh(models_dir, threads=2)


def blink_run(engine, face_mesh, frames, fps: float, blink: Blink) -> list[tuple[str, str | None]]:
    state = SimpleNamespace(s=None)
    from facelink.device.liveness_blink import BlinkState

    state.s = BlinkState()
    out = []
    for i, frame in enumerate(frames):
        faces = engine.detect(frame)
        reading = face_mesh.read_eyes(frame, faces[0].detection.box, faces[0].detection.landmarks) if faces else None
        out.append(blink.observe(state.s, reading, i / fps))
    return out, state.s


def test_live_video_blinks_within_the_window(engine, face_mesh, faces_dir):
    frames = video_frames(faces_dir / "video/feat_man.mp4", step=2)  # 15 fps, the door's rate
    verdicts, state = blink_run(engine, face_mesh, frames, 15.0, Blink(window_s=5.0))
    assert state.blinks >= 1 and verdicts[-1] == (LIVE, None)
    assert state.first_blink_s < 2.5  # the man blinks about 0.9 s in
    assert all(v != (SPOOF, NO_BLINK) for v in verdicts)


def test_still_photo_never_blinks(engine, face_mesh, faces_dir):
    rng = np.random.default_rng(3)
    photo = door_size(cv2.imread(str(faces_dir / "people/feat_man/photo.jpg")))
    frames = [degraded(photo, rng, sigma=2, jitter=2) for _ in range(20)]
    verdicts, state = blink_run(engine, face_mesh, frames, 15.0, Blink(window_s=1.0))
    assert state.blinks == 0
    assert verdicts[0] == (PENDING, WAITING)
    assert verdicts[-1] == (SPOOF, NO_BLINK)


def test_checker_combines_checks_and_reports(engine, face_mesh, faces_dir):
    checker = LivenessChecker(FrozenFeed(), Blink(window_s=5.0), face_mesh)
    frames = video_frames(faces_dir / "video/feat_man.mp4", step=2)
    states = []
    for i, pixels in enumerate(frames):
        face = engine.detect(pixels)[0]
        states.append(checker.check(7, face, SimpleNamespace(pixels=pixels), i / 15.0).state)
    assert states[0] == PENDING and states[-1] == LIVE
    report = checker.report(7)
    assert report["checks"] == ["frozen_feed", "blink"]
    assert report["blink"]["blinks"] >= 1 and report["frozen_feed"]["compared"] >= len(frames) - 2
    assert checker.counters()["blinks"] >= 1
