"""The pipeline on real faces: one person at the door is one decision; the next person who steps
into the same spot gets a decision of their own."""

from __future__ import annotations

import cv2
import numpy as np

from facelink.device.assembly import build_components
from facelink.device.camera import Frame
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline
from facelink.enroll import faces, users


def _frame(faces_dir, name: str, i: int) -> Frame:
    """The person's photo pasted at the same place of a 640x480 frame, with sensor-like noise."""
    photo = cv2.imread(str(faces_dir / "people" / name / "1.jpg"))
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[60:420, 180:468] = cv2.resize(photo, (288, 360), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(i).normal(0, 2, canvas.shape)
    return Frame(np.clip(canvas + noise, 0, 255).astype(np.uint8), float(i), i)


def _pipeline(ctx, faces_dir, engine, make_settings, **matching) -> DoorPipeline:
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    # a pasted still photo is a frozen feed to the liveness checks: they are tested on their own
    settings = make_settings(matching=matching, liveness={"enabled": False})
    return DoorPipeline(engine, index, build_components(settings, engine))


def test_next_person_in_the_same_spot_gets_a_decision(ctx, faces_dir, engine, make_settings):
    pipeline = _pipeline(ctx, faces_dir, engine, make_settings, track_max_age_s=5.0)
    decisions = []
    for i in range(12):
        decisions += pipeline.process(_frame(faces_dir, "obama", i), 0.1 * i)
    for i in range(12, 24):
        decisions += pipeline.process(_frame(faces_dir, "biden", i), 0.1 * i)
    assert [d.decision for d in decisions] == ["GRANTED", "DENIED_UNKNOWN"]
    assert decisions[0].user_id == "obama" and decisions[0].track_id != decisions[1].track_id


class CountingEngine:
    """The real engine, counting the faces it embeds."""

    def __init__(self, engine) -> None:
        self._engine, self.embedded = engine, 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def embed(self, bgr, faces):
        self.embedded += len(faces)
        return self._engine.embed(bgr, faces)


def test_decision_held_back_by_the_cooldown_keeps_one_track(ctx, faces_dir, engine, make_settings):
    """Granted, away for a moment, back within the cooldown and standing there for 30 frames past
    its end: one track, a handful of embeddings (the re-checks), no second GRANTED."""
    counting = CountingEngine(engine)
    pipeline = _pipeline(ctx, faces_dir, counting, make_settings, track_max_age_s=0.5, cooldown_s=2.0)
    decisions = []
    for i in range(10):
        decisions += pipeline.process(_frame(faces_dir, "obama", i), 0.1 * i)
    assert [d.decision for d in decisions] == ["GRANTED"]
    counting.embedded, track_ids = 0, set()
    for i in range(30):  # back at t=1.5 (the first track has expired); the cooldown ends at t=2.2
        decisions += pipeline.process(_frame(faces_dir, "obama", 100 + i), 1.5 + 0.1 * i)
        track_ids |= {t.track_id for t in pipeline.components.tracker.tracks()}
    assert [d.decision for d in decisions] == ["GRANTED"]
    assert len(track_ids) == 1, track_ids
    frames_to_decide = pipeline.components.policy.frames_required
    assert counting.embedded <= frames_to_decide + 30 // DoorPipeline.RECHECK_EVERY + 1, counting.embedded


def test_door_gate_uses_rekognitions_reason_names(ctx, faces_dir, engine, make_settings):
    """One quality gate for desk and door: a face too small for the door is SMALL_BOUNDING_BOX,
    the reason IndexFaces gives for the same face."""
    pipeline = _pipeline(ctx, faces_dir, engine, make_settings, min_face_px=400)
    decisions = []
    for i in range(6):
        decisions += pipeline.process(_frame(faces_dir, "obama", i), 0.1 * i)
    assert [(d.decision, d.reason) for d in decisions] == [("DENIED_LOW_QUALITY", "SMALL_BOUNDING_BOX")]


def test_same_person_level_follows_the_calibration(engine, make_settings):
    from facelink.models.engine import FaceEngine
    from facelink.models.manifest import Calibration
    from facelink.models.similarity import SAME_PERSON_SIMILARITY, cosine_to_similarity

    shipped = build_components(make_settings(), engine).same_person_cosine
    assert abs(cosine_to_similarity(shipped, engine.calibration) - SAME_PERSON_SIMILARITY) < 1e-6
    refit = FaceEngine(engine.detector, engine.embedder, engine.model_version,
                       Calibration(a=engine.calibration.a * 2, b=engine.calibration.b, fitted_on="test"))
    moved = build_components(make_settings(), refit).same_person_cosine
    assert abs(cosine_to_similarity(moved, refit.calibration) - SAME_PERSON_SIMILARITY) < 1e-6
    assert abs(moved - shipped) > 0.05  # a re-fit moves the re-check level with it
