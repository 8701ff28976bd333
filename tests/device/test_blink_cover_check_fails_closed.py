"""A closed frame whose cover check fails (raises) must leave its closure unjudged.

``Blink._closed_frame`` reset ``closure_still`` to 1.0 at the closure's start and assigned the
match only after ``still_match`` returned: a frame whose match raised (a cv2 error, non-finite
mesh points, MemoryError) left 1.0 -- "the skin round the eyes is as it was" -- and the door goes
on with the next frame (``Daemon.fail_closed``: ERROR, the loop goes on), whose reopening counted
the covered closure as a blink."""

from __future__ import annotations

import cv2
import eval_blink_cover as cover
import pytest

from facelink.device import liveness_blink
from facelink.device.assembly import build_components
from facelink.device.camera import Frame
from facelink.device.liveness_blink import Blink, BlinkState
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline
from facelink.enroll import faces, users


@pytest.fixture(scope="module")
def face_mesh(models_dir):
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed")
    from facelink.device.liveness import load_face_mesh
    from facelink.models.provision import provision

    provision(models_dir, tflite=True)
    return load_face_mesh(models_dir, threads=2)


def _raising(monkeypatch) -> list[int]:
    """``still_match`` fails on every frame it is asked about (e.g. the cover itself makes it fail)."""
    calls = []

    def still_match(opened, closed):
        calls.append(1)
        raise cv2.error("injected: the cover check failed on this frame")

    monkeypatch.setattr(liveness_blink, "still_match", still_match)
    return calls


def test_a_covered_closure_whose_check_raised_is_no_blink(engine, face_mesh, faces_dir, monkeypatch):
    """The textured strip over a real print's eyes (frames 20-22): the check raising on the
    covered frames must not turn the closure into a blink."""
    photo = cv2.imread(str(faces_dir / "people/kit_harington/1.jpg"))
    readings = cover.readings(engine, face_mesh, cover.covered_print(engine, photo, cover.textured, 9))
    calls = _raising(monkeypatch)
    state, blink = BlinkState(), Blink()
    for i, r in enumerate(readings):
        try:
            blink.observe(state, r, i / 15)
        except cv2.error:
            pass  # the daemon: ERROR for this frame, the loop goes on
    assert calls  # the injected failure happened
    assert state.blinks == 0, Blink.report(state)


def test_the_door_does_not_grant_a_covered_print_after_a_failed_check(ctx, faces_dir, engine, make_settings,
                                                                     face_mesh, monkeypatch):
    """The same at the door (frozen feed + blink, the recommended RGB set): each frame's error is
    handled as the daemon does (the step fails, the next frame comes)."""
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    prints = cover.covered_print(engine, cv2.imread(str(faces_dir / "people/obama/1.jpg")), cover.textured, 5)
    settings = make_settings(liveness={"enabled": True, "frozen_feed": True, "require_blink": True})
    door = DoorPipeline(engine, index, build_components(settings, engine))
    calls = _raising(monkeypatch)
    decisions, errors = [], 0
    for i, px in enumerate(prints):
        try:
            decisions += [d.decision for d in door.process(Frame(px, i / 15, i), i / 15)]
        except cv2.error:
            errors += 1
    assert calls and errors == len(calls)
    assert "GRANTED" not in decisions, decisions
