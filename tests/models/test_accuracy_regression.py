"""What must never regress, on a fixed 40-identity subset of ../shared/faces/celeba (the first 40
identity folders, 441 photos; embeddings cached in the user data dir after the first run).
Not a timing test. Floors measured on 2026-11-23 with the default engine (README "Accuracy")."""

from __future__ import annotations

import numpy as np
import pytest

from facelink.models import evaluate as ev
from facelink.models.similarity import similarity_to_cosine

SUBSET = 40
TAR_AT_99_MEASURED = 0.701  # 1630 of 2326 genuine pairs, 95 % CI [0.681, 0.719]
MARGIN = 0.05


@pytest.fixture(scope="module")
def subset(faces_dir, model_settings, engine):
    root = faces_dir / "celeba"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    data = ev.load_dataset(root, identities=SUBSET)
    emb = ev.embed(data, model_settings, workers=2)
    return data, emb, engine.calibration


def test_no_impostor_pair_at_99_and_tar_floor(subset):
    data, emb, cal = subset
    assert len(data.names) == SUBSET and len(data.images) == 441
    scores = ev.scores_of(data, emb.vectors)
    cos99 = similarity_to_cosine(99, cal)
    assert scores.impostor.size > 90_000
    assert scores.far(cos99).k == 0, f"impostor pairs at Similarity 99: max cosine {scores.impostor[-1]:.3f}"
    tar = 1 - scores.frr(cos99).value
    assert tar >= TAR_AT_99_MEASURED - MARGIN


def test_open_set_door_grants_no_stranger_at_99(subset):
    from facelink.models.openset import open_set

    data, emb, cal = subset
    result = open_set(emb.vectors, data.labels, similarity_to_cosine(99, cal), np.random.default_rng(0),
                      galleries=((10, 10), (SUBSET, 3)))
    for g, r in result.items():
        assert r["stranger_granted"]["count"] == 0, g
        assert r["stranger_granted"]["of"] > 1000
        assert r["wrong_holder"]["count"] == 0, g
        assert r["right_holder"]["rate"] >= TAR_AT_99_MEASURED - 2 * MARGIN
