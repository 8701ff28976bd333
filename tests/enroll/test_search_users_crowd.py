"""SearchUsers and SearchUsersByImage compare against the faces associated with users, and only
those: however many unassociated faces (a lobby's visitor log, near-duplicate captures never
associated) lie closer to the probe, the users found, their Similarity and their order are the
same, and they agree with the door (``UserIndex``, which holds associated faces only). Nor do
one user's many faces hide the other users: the ranking is every user's best face, exactly.

Real models on real photos (``../shared/faces``), a real SQLite + sqlite-vec store; the crowd is
real embeddings with a little noise, renormalised, written through ``Store.insert_faces``."""

from __future__ import annotations

import uuid
from typing import Any

import cv2
import numpy as np
import pytest

from facelink.device.matcher import UserIndex
from facelink.enroll import faces, search, users
from facelink.enroll.context import Context
from facelink.enroll.search import MAX_SEARCH_FACES
from facelink.models.similarity import cosine_to_similarity

CROWD = MAX_SEARCH_FACES + 100  # more unassociated faces than one sqlite-vec KNN can return
ENROLLED = {"obama": ["1.jpg", "2.jpg"], "biden": ["1.jpg"], "kit_harington": ["1.jpg"],
            "rose_leslie": ["1.jpg"], "alex_lacamoire": ["1.jpg"]}


def _embedding(engine: Any, path: Any) -> np.ndarray:
    return engine.analyze(cv2.imread(str(path)), max_faces=1)[0].embedding


def _crowd(ctx: Context, around: np.ndarray, n: int, seed: int, noise: float = 0.01,
           user_id: str | None = None) -> None:
    """``n`` faces near ``around`` (cosine ~0.99 at noise 0.01), unassociated or ``user_id``'s,
    through the store's write path."""
    rng = np.random.default_rng(seed)
    near = around + rng.normal(0.0, noise, size=(n, len(around))).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    box = {"Width": 0.3, "Height": 0.4, "Left": 0.3, "Top": 0.2}
    ctx.store.insert_faces([{"face_id": str(uuid.uuid4()), "collection_id": "c", "image_id": str(uuid.uuid4()),
                             "external_image_id": f"capture-{seed}-{i}", "user_id": user_id,
                             "image_sha256": f"{seed}{i:063x}", "bounding_box": box, "confidence": 99.0,
                             "embedding": v} for i, v in enumerate(near)], require_user=user_id)


def _exact(ctx: Context, vectors: list[np.ndarray], exclude: str | None = None) -> list[tuple[str, float]]:
    """The reference: every associated face compared (numpy), each user's best, best first."""
    cols = ctx.store.collection_face_columns("c", users_only=True)
    best: dict[str, float] = {}
    for u, c in zip(cols.user_ids, (cols.embeddings @ np.stack(vectors).T).max(axis=1)):
        if u is not None and u != exclude:
            best[u] = max(best.get(u, -2.0), float(c))
    cal = ctx.calibration(ctx.collection("c"))
    return sorted(((u, float(cosine_to_similarity(c, cal))) for u, c in best.items()), key=lambda t: -t[1])


def _ranked(out: dict[str, Any]) -> list[tuple[str, float]]:
    assert all(m["User"]["UserStatus"] == "ACTIVE" for m in out["UserMatches"])
    return [(m["User"]["UserId"], m["Similarity"]) for m in out["UserMatches"]]


def _agree(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [u for u, _ in got] == [u for u, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-3)


@pytest.fixture()
def lobby(ctx, faces_dir):
    """Five users; a visitor-log capture of Obama (obama/4.jpg) indexed but not associated."""
    faces.create_collection(ctx, "c")
    for name, files in ENROLLED.items():
        users.create_user(ctx, "c", name)
        for f in files:
            faces.index_faces(ctx, "c", faces_dir / "people" / name / f, f"{name}-{f}", user_id=name)
    visitor = faces.index_faces(ctx, "c", faces_dir / "people/obama/4.jpg", "visitor-log")
    return visitor["FaceRecords"][0]["Face"]["FaceId"]


def test_unassociated_crowd_does_not_hide_users(ctx, engine, faces_dir, lobby):
    probe = faces_dir / "people/obama/4.jpg"
    obama = [f.embedding for f in ctx.store.list_faces("c", 0, 10, user_id="obama")]

    def searches() -> dict[str, list[tuple[str, float]]]:
        return {"by image": _ranked(users.search_users_by_image(ctx, "c", probe, user_match_threshold=0)),
                "by face": _ranked(users.search_users(ctx, "c", face_id=lobby, user_match_threshold=0)),
                "by user": _ranked(users.search_users(ctx, "c", user_id="obama", user_match_threshold=0))}

    before = searches()
    probe_vector = _embedding(engine, probe)
    assert [u for u, _ in before["by image"]][0] == "obama" and len(before["by image"]) == len(ENROLLED)
    assert len(before["by user"]) == len(ENROLLED) - 1  # the searched user is left out

    _crowd(ctx, probe_vector, CROWD, seed=0)  # Obama's visitor log: never associated
    nearest = search.search_faces_by_image(ctx, "c", probe, face_match_threshold=0, max_faces=MAX_SEARCH_FACES)
    assert len(nearest["FaceMatches"]) == MAX_SEARCH_FACES
    assert not any("UserId" in m["Face"] for m in nearest["FaceMatches"])  # all unassociated: the crowd is real

    after = searches()
    assert after == before  # the same users, Similarity and order, however crowded
    _agree(after["by image"], _exact(ctx, [probe_vector]))
    _agree(after["by user"], _exact(ctx, obama, exclude="obama"))

    door = UserIndex(ctx.store, "c", ctx.collection("c").face_model_version)
    door.load()
    assert len(door) == sum(len(f) for f in ENROLLED.values())  # the door holds associated faces only
    match = door.best(probe_vector)
    assert match is not None and match.user_id == after["by image"][0][0] == "obama"


def test_max_users_and_threshold_cut_the_exact_ranking(ctx, engine, faces_dir, lobby):
    """A crowd near another user's face (Biden's): the ranking is still every user, exactly;
    MaxUsers and UserMatchThreshold cut it, nothing else does."""
    probe = faces_dir / "people/obama/4.jpg"
    _crowd(ctx, _embedding(engine, faces_dir / "people/biden/1.jpg"), CROWD, seed=1)  # near another user
    full = _ranked(users.search_users_by_image(ctx, "c", probe, user_match_threshold=0))
    _agree(full, _exact(ctx, [_embedding(engine, probe)]))
    assert "biden" in [u for u, _ in full]
    assert _ranked(users.search_users_by_image(ctx, "c", probe, user_match_threshold=0, max_users=2)) == full[:2]
    cut = (full[1][1] + full[2][1]) / 2  # between the second and third users' Similarity
    assert _ranked(users.search_users_by_image(ctx, "c", probe, user_match_threshold=cut)) == full[:2]


def test_a_users_many_faces_hide_no_other_user(ctx, engine, faces_dir, lobby):
    """A user with more near-duplicate faces than one KNN returns (a look-alike enrolled from a
    video) still leaves every other user in the ranking; and SearchUsers by that UserId, with more
    probe faces than one statement takes, is each other user's best over all of them."""
    probe = faces_dir / "people/obama/4.jpg"
    users.create_user(ctx, "c", "lookalike")
    _crowd(ctx, _embedding(engine, probe), CROWD, seed=2, noise=0.02, user_id="lookalike")
    found = _ranked(users.search_users_by_image(ctx, "c", probe, user_match_threshold=0))
    assert len(found) == len(ENROLLED) + 1
    _agree(found, _exact(ctx, [_embedding(engine, probe)]))
    probes = [f.embedding for f in ctx.store.list_faces("c", 0, CROWD, user_id="lookalike")]  # every one (4,196)
    _agree(_ranked(users.search_users(ctx, "c", user_id="lookalike", user_match_threshold=0)),
           _exact(ctx, probes, exclude="lookalike"))


def test_the_scan_is_the_knn_distance_one_user_at_a_time(ctx, engine, faces_dir, lobby):
    """``Store.nearest_users`` gives each user the distance the sqlite-vec KNN gives its nearest
    face, bit for bit (so Similarity is what SearchFaces says for that face). Bounded memory: the
    associated faces are walked in the faces_by_user index, so SQLite aggregates one user at a
    time (no GROUP BY b-tree of every user) and sorts ``limit`` rows."""
    from facelink.enroll.store import NEAREST_USERS_SQL

    probe = _embedding(engine, faces_dir / "people/obama/4.jpg")
    knn = dict(ctx.store.knn("c", probe, 100))
    by_user: dict[str, float] = {}
    for f in ctx.store.faces_by_rows(list(knn)):
        if f.user_id is not None:
            by_user[f.user_id] = min(by_user.get(f.user_id, 2.0), knn[f.id])
    assert dict(ctx.store.nearest_users("c", [probe], 500)) == by_user
    plan = [r[3] for r in ctx.store.query("EXPLAIN QUERY PLAN " + NEAREST_USERS_SQL.format(probes="(?), (?)"),
                                          (probe.tobytes(), probe.tobytes(), "c", None, 500))]
    assert any("USING INDEX faces_by_user" in step for step in plan), plan
    assert not any("GROUP BY" in step for step in plan), plan
