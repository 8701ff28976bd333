"""Past what one sqlite-vec KNN returns (4,096 faces): SearchFaces by FaceId with MaxFaces 4096
returns 4,096 faces, not 4,095 (the searched face took one of the KNN's places), and SearchUsers
by UserId searches with every face of the user, not its first 4,096. Real models on real photos
(``../shared/faces``), a real SQLite + sqlite-vec store; the crowd is real embeddings with a
little noise, written through ``Store.insert_faces``."""

from __future__ import annotations

import numpy as np

from facelink.enroll import faces, search, users
from facelink.enroll.search import MAX_SEARCH_FACES

from .test_search_users_crowd import _crowd, _embedding


def test_search_faces_by_face_id_returns_max_faces_4096(ctx, faces_dir, engine):
    faces.create_collection(ctx, "c")
    obama = _embedding(engine, faces_dir / "people/obama/1.jpg")
    _crowd(ctx, obama, MAX_SEARCH_FACES + 10, seed=1)
    searched = faces.index_faces(ctx, "c", faces_dir / "people/obama/1.jpg", "searched")["FaceRecords"][0]["Face"]
    out = search.search_faces(ctx, "c", searched["FaceId"], face_match_threshold=0, max_faces=MAX_SEARCH_FACES)
    ids = [m["Face"]["FaceId"] for m in out["FaceMatches"]]
    assert len(ids) == MAX_SEARCH_FACES and searched["FaceId"] not in ids and len(set(ids)) == len(ids)
    similarities = [m["Similarity"] for m in out["FaceMatches"]]
    assert similarities == sorted(similarities, reverse=True)
    # the same faces as the exact reference: every other face compared (numpy)
    cols = ctx.store.collection_face_columns("c")
    cosines = cols.embeddings @ ctx.store.get_faces("c", [searched["FaceId"]])[0].embedding
    others = [(c, f) for c, f in zip(cosines, cols.face_ids) if f != searched["FaceId"]]
    kth = sorted((c for c, _ in others), reverse=True)[MAX_SEARCH_FACES - 1]
    assert {f for c, f in others if c > kth + 1e-6} <= set(ids)
    # below the limit nothing changes: MaxFaces 10 is the 10 nearest others
    ten = search.search_faces(ctx, "c", searched["FaceId"], face_match_threshold=0, max_faces=10)
    assert [m["Face"]["FaceId"] for m in ten["FaceMatches"]] == ids[:10]


def test_search_users_by_user_id_uses_every_face_of_the_user(ctx, faces_dir, engine):
    """A user with more than 4,096 faces (a desk that associated every capture): the face that
    resembles Biden is its last; SearchUsers by its UserId finds Biden."""
    faces.create_collection(ctx, "c")
    users.create_user(ctx, "c", "biden")
    faces.index_faces(ctx, "c", faces_dir / "people/biden/1.jpg", "biden-1", user_id="biden")
    users.create_user(ctx, "c", "many")
    far = np.random.default_rng(5).normal(size=128).astype(np.float32)
    _crowd(ctx, far / np.linalg.norm(far), MAX_SEARCH_FACES, seed=2, user_id="many")
    _crowd(ctx, _embedding(engine, faces_dir / "people/biden/2.jpg"), 1, seed=3, user_id="many")
    out = users.search_users(ctx, "c", user_id="many", user_match_threshold=80)
    assert [m["User"]["UserId"] for m in out["UserMatches"]] == ["biden"]
