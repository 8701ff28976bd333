"""LivenessChecker keeps per-track state for MAX_TRACKS tracks (found in review): the ones to forget
must be the least recently seen, not the earliest created. It evicted by creation order, so the
person standing at the door longest -- whose track is the oldest -- lost their blink (and frozen-
feed comparisons) as soon as MAX_TRACKS newer tracks had come and gone (passers-by, restarts on
each badge read or identity change): back to WAITING_FOR_BLINK, and their decision's liveness
report empty."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from facelink.device.liveness import MAX_TRACKS, LivenessChecker, load_face_mesh
from facelink.device.liveness_blink import Blink
from facelink.device.liveness_frozen import LIVE, FrozenFeed

from .test_liveness import video_frames


@pytest.fixture(scope="module")
def face_mesh(models_dir):
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed")
    from facelink.models.provision import provision

    provision(models_dir, tflite=True)
    return load_face_mesh(models_dir, threads=2)


def test_the_track_in_view_keeps_its_liveness_while_others_come_and_go(engine, face_mesh, faces_dir):
    checker = LivenessChecker(FrozenFeed(), Blink(window_s=5.0), face_mesh)
    frames = video_frames(faces_dir / "video/feat_man.mp4", step=2)  # he blinks ~0.9 s in
    faces = [engine.detect(px)[0] for px in frames]
    seen = 24
    states = [checker.check(1, f, SimpleNamespace(pixels=px), i / 15).state
              for i, (f, px) in enumerate(zip(faces[:seen], frames[:seen], strict=True))]
    assert states[-1] == LIVE and checker.report(1)["blink"]["blinks"] >= 1
    rest = range(seen, len(frames))
    others = MAX_TRACKS // len(rest) + 1
    for i in rest:  # track 1 stays in view, every frame, while more than MAX_TRACKS others come and go
        assert checker.check(1, faces[i], SimpleNamespace(pixels=frames[i]), i / 15).state == LIVE, i
        for k in range(others):
            checker.check(1000 + i * 100 + k, faces[i], SimpleNamespace(pixels=frames[i]), i / 15)
    assert checker.report(1).get("blink", {}).get("blinks", 0) >= 1, checker.report(1)
