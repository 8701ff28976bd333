"""Export -> import round trip of the owner's embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from facelink.enroll import exchange, faces, search, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.errors import ConflictException, InvalidParameterException


def test_export_import_roundtrip(ctx, faces_dir, tmp_path, engine):
    faces.create_collection(ctx, "src")
    users.create_user(ctx, "src", "obama")
    faces.index_faces(ctx, "src", faces_dir / "people/obama/1.jpg", "o1", user_id="obama")
    faces.index_faces(ctx, "src", faces_dir / "people/biden/1.jpg", "b1")
    out = exchange.export_faces(ctx, "src", tmp_path / "export.npz")
    assert out["FaceCount"] == 2 and out["UserCount"] == 1

    other = Context(Store(tmp_path / "other-appliance.db"), lambda: engine)
    res = exchange.import_faces(other, "dst", tmp_path / "export.npz")
    assert res["ImportedFaces"] == 2
    src_m, src_rows = ctx.store.all_vectors("src")
    dst_m, dst_rows = other.store.all_vectors("dst")
    assert np.array_equal(src_m, dst_m)
    assert [r.face_id for r in src_rows] == [r.face_id for r in dst_rows]
    assert [r.user_id for r in dst_rows] == ["obama", None]
    # the imported collection is searchable like the original
    hit = search.search_faces_by_image(other, "dst", faces_dir / "people/obama/2.jpg", 99)
    assert hit["FaceMatches"][0]["Face"]["ExternalImageId"] == "o1"
    # importing again adds nothing
    assert exchange.import_faces(other, "dst", tmp_path / "export.npz")["SkippedFaces"] == 2
    other.store.close()


def test_import_refuses_other_model_version(ctx, faces_dir, tmp_path):
    faces.create_collection(ctx, "src")
    faces.index_faces(ctx, "src", faces_dir / "people/biden/1.jpg", "b1")
    exchange.export_faces(ctx, "src", tmp_path / "e.npz")
    ctx.store.insert_collection("legacy", "some-other-model/v1")
    with pytest.raises(ConflictException):
        exchange.import_faces(ctx, "legacy", tmp_path / "e.npz")


def test_import_rejects_damaged_file(ctx, tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 nonsense")
    with pytest.raises(InvalidParameterException):
        exchange.import_faces(ctx, "x", tmp_path / "junk.npz")


def test_import_refuses_a_row_that_is_not_a_unit_vector(ctx, faces_dir, tmp_path, engine):
    """Scores are dot products: obama's row made 5x longer (every value still in [-1, 1], the
    checksum recomputed, unsigned) would match biden above the threshold. The import refuses the
    whole file before anything changes, and the store refuses such a row from any other path."""
    import hashlib
    import json

    faces.create_collection(ctx, "desk")
    users.create_user(ctx, "desk", "obama")
    faces.index_faces(ctx, "desk", faces_dir / "people/obama/1.jpg", "obama-1", user_id="obama")
    exchange.export_faces(ctx, "desk", tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as data:
        meta, matrix = json.loads(bytes(data["meta"])), data["embeddings"] * np.float32(5)
    assert np.abs(matrix).max() <= 1.0
    meta["EmbeddingsSha256"] = hashlib.sha256(matrix.tobytes()).hexdigest()
    np.savez(tmp_path / "long.npz", embeddings=matrix, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    door = Context(Store(tmp_path / "door.db"), lambda: engine)
    exchange.import_faces(door, "door", tmp_path / "good.npz", replace=True)
    before = door.store.all_vectors("door")
    with pytest.raises(InvalidParameterException, match="not unit vectors"):
        exchange.import_faces(door, "door", tmp_path / "long.npz", replace=True)
    after = door.store.all_vectors("door")
    assert np.array_equal(after[0], before[0]) and [r.face_id for r in after[1]] == [r.face_id for r in before[1]]
    row = {"face_id": "f", "collection_id": "door", "image_id": "i", "image_sha256": "s",
           "bounding_box": {}, "confidence": 99.0}
    for bad in (matrix[0], np.full(128, np.nan, np.float32), before[0][0][:64]):
        with pytest.raises(InvalidParameterException):
            door.store.insert_faces([{**row, "face_id": "g", "embedding": before[0][0]},
                                     {**row, "embedding": bad}])
    assert len(door.store.all_vectors("door")[1]) == 1  # not even the good row of the batch
    door.store.close()


def test_replace_syncs_a_door_with_the_desk(ctx, faces_dir, tmp_path, engine):
    """The desk revokes a badge and re-exports; the door imports with --replace: it is gone there too."""
    faces.create_collection(ctx, "desk")
    for name in ("obama", "biden"):
        users.create_user(ctx, "desk", name)
        faces.index_faces(ctx, "desk", faces_dir / "people" / name / "1.jpg", f"{name}-1", user_id=name)
    exchange.export_faces(ctx, "desk", tmp_path / "v1.npz")
    door = Context(Store(tmp_path / "door.db"), lambda: engine)
    exchange.import_faces(door, "door", tmp_path / "v1.npz", replace=True)
    assert [u["UserId"] for u in users.list_users(door, "door")["Users"]] == ["biden", "obama"]

    biden_face = faces.list_faces(ctx, "desk", user_id="biden")["Faces"][0]["FaceId"]
    users.delete_user(ctx, "desk", "biden")  # badge revoked at the desk
    faces.delete_faces(ctx, "desk", [biden_face])
    exchange.export_faces(ctx, "desk", tmp_path / "v2.npz")
    out = exchange.import_faces(door, "door", tmp_path / "v2.npz", replace=True)
    assert out["RemovedFaces"] == 1 and out["RemovedUsers"] == ["biden"]
    hits = search.search_faces_by_image(door, "door", faces_dir / "people/biden/2.jpg", 90)["FaceMatches"]
    assert hits == []
    assert [u["UserId"] for u in users.list_users(door, "door")["Users"]] == ["obama"]
    door.store.close()
