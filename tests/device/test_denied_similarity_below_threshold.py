"""A denial never states a Similarity at or above the threshold it was denied under: the value
published is the one the decision compared, rounded towards it, not past it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from facelink.device.assembly import build_components
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline
from facelink.enroll import faces, users

from .test_pipeline import _frame


class PlacedEngine:
    """The real engine (detection, quality), every embedded face replaced by ``embedding``."""

    def __init__(self, engine, embedding: np.ndarray) -> None:
        self._engine, self.embedding = engine, embedding

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def embed(self, bgr, found):
        return [replace(f, embedding=self.embedding) for f in self._engine.embed(bgr, found)]


def _just_below(index: UserIndex, engine, enrolled: np.ndarray, threshold: float) -> np.ndarray:
    """A unit query whose door Similarity to ``enrolled`` lies in (threshold - 5e-5, threshold)."""
    rng = np.random.default_rng(0)
    u = rng.normal(size=enrolled.shape)
    u -= (u @ enrolled) * enrolled
    u /= np.linalg.norm(u)
    target = engine.cosine_for(threshold)
    for step in range(1, 400):
        c = target - step * 2e-8
        q = (c * enrolled.astype(np.float64) + np.sqrt(1 - c * c) * u).astype(np.float32)
        q /= np.linalg.norm(q.astype(np.float64)).astype(np.float32)
        sim = float(engine.similarity(index.best(q).cosine))
        if threshold - 5e-5 < sim < threshold:
            return q
    raise AssertionError("no query placed just below the threshold")


def test_denied_unknown_never_reports_the_threshold(ctx, faces_dir, engine, make_settings):
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    settings = make_settings(liveness={"enabled": False})
    threshold = settings.matching.similarity_threshold
    enrolled = index._gallery.matrix[0]
    query = _just_below(index, engine, enrolled, threshold)
    pipeline = DoorPipeline(PlacedEngine(engine, query), index, build_components(settings, engine))
    decisions = []
    for i in range(8):
        decisions += pipeline.process(_frame(faces_dir, "obama", i), 0.1 * i)
    assert [d.decision for d in decisions] == ["DENIED_UNKNOWN"]
    denied = decisions[0]
    assert denied.similarity < denied.threshold == threshold  # main: 99.0 denied at threshold 99.0
