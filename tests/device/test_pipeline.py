"""The pipeline on real faces: one person at the door is one decision; the next person who steps
into the same spot gets a decision of their own."""

from __future__ import annotations

import cv2
import numpy as np

from facelink.device.camera import Frame
from facelink.device.decision import DecisionPolicy
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline, Gate
from facelink.device.tracker import Tracker
from facelink.enroll import faces, users


def _frame(faces_dir, name: str, i: int) -> Frame:
    """The person's photo pasted at the same place of a 640x480 frame, with sensor-like noise."""
    photo = cv2.imread(str(faces_dir / "people" / name / "1.jpg"))
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[60:420, 180:468] = cv2.resize(photo, (288, 360), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(i).normal(0, 2, canvas.shape)
    return Frame(np.clip(canvas + noise, 0, 255).astype(np.uint8), float(i), i)


def test_next_person_in_the_same_spot_gets_a_decision(ctx, faces_dir, engine):
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    policy = DecisionPolicy("d", "door", engine.model_version, 99.0, 3, 5, cooldown_s=10.0)
    pipeline = DoorPipeline(engine, index, Tracker(5, max_age_s=5.0), policy, Gate(60, 35, 30, 8, 15))
    decisions = []
    for i in range(12):
        decisions += pipeline.process(_frame(faces_dir, "obama", i), 0.1 * i)
    for i in range(12, 24):
        decisions += pipeline.process(_frame(faces_dir, "biden", i), 0.1 * i)
    assert [d.decision for d in decisions] == ["GRANTED", "DENIED_UNKNOWN"]
    assert decisions[0].user_id == "obama" and decisions[0].track_id != decisions[1].track_id
