"""The door's rules replayed for evaluation (models/openset.py), on synthetic scores."""

from __future__ import annotations

import numpy as np

from facelink.models.openset import extrapolate, open_set, sequence_attempts
from facelink.models.rates import Rate


def test_sequence_attempts_follow_n_of_m():
    t = 0.5
    users = np.array([1, 1, 2, 1, 0, 0, 0, 3, 3])
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.2, 0.3, 0.6, np.nan])
    # frames 0-3: user 1 reaches 3 of 5 (a user-2 frame between) -> GRANTED 1; 4-6: three no-matches
    # -> DENIED; 7: one match, then a frame without a face (skipped): no decision yet
    assert sequence_attempts(users, scores, t, 3, 5) == [("GRANTED", 1), ("DENIED", None)]
    # two users alternating never agree 3 times within 4 frames
    assert sequence_attempts(np.array([1, 2] * 4), np.full(8, 0.9), t, 3, 4) == []


def test_open_set_counts_strangers_and_holders():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(30, 64))
    labels = np.repeat(np.arange(30), 4)
    v = centers[labels] + 0.3 * rng.normal(size=(120, 64))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = open_set(v.astype(np.float32), labels, 0.6, rng, galleries=((10, 5), (30, 2)))
    ten = r["10"]
    assert ten["stranger_granted"]["of"] == 5 * 80  # 20 strangers x 4 photos per draw
    assert ten["right_holder"]["of"] == 5 * 30  # 10 holders x 3 photos besides the badge
    assert ten["stranger_granted"]["count"] == 0 and ten["right_holder"]["rate"] > 0.9
    assert "leave-one-out" in r["30"]["strangers"]
    low = open_set(v.astype(np.float32), labels, -1.0, rng, galleries=((10, 1),))["10"]
    assert low["stranger_granted"]["rate"] == 1.0  # everyone matches someone at cosine -1


def test_extrapolation_grows_with_the_gallery():
    q = np.array([0.0] * 99 + [0.01])
    e = extrapolate(q, Rate(1, 10_000), sizes=(10, 1000))
    assert e["10"]["per_probe_model"] < e["1000"]["per_probe_model"] <= 0.01
    assert e["1000"]["independent"] > e["1000"]["per_probe_model"]
