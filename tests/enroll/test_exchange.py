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
    res = exchange.import_faces(other, "dst", tmp_path / "export.npz", source_collection_id="src")
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
    assert exchange.import_faces(other, "dst", tmp_path / "export.npz", source_collection_id="src")["SkippedFaces"] == 2
    other.store.close()


def test_import_refuses_other_model_version(ctx, faces_dir, tmp_path):
    faces.create_collection(ctx, "src")
    faces.index_faces(ctx, "src", faces_dir / "people/biden/1.jpg", "b1")
    exchange.export_faces(ctx, "src", tmp_path / "e.npz")
    ctx.store.insert_collection("legacy", "some-other-model/v1")
    with pytest.raises(ConflictException):
        exchange.import_faces(ctx, "legacy", tmp_path / "e.npz", source_collection_id="src")


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
    exchange.import_faces(door, "door", tmp_path / "good.npz", source_collection_id="desk", replace=True)
    before = door.store.all_vectors("door")
    with pytest.raises(InvalidParameterException, match="not unit vectors"):
        exchange.import_faces(door, "door", tmp_path / "long.npz", source_collection_id="desk", replace=True)
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
    exchange.import_faces(door, "door", tmp_path / "v1.npz", source_collection_id="desk", replace=True)
    assert [u["UserId"] for u in users.list_users(door, "door")["Users"]] == ["biden", "obama"]

    biden_face = faces.list_faces(ctx, "desk", user_id="biden")["Faces"][0]["FaceId"]
    users.delete_user(ctx, "desk", "biden")  # badge revoked at the desk
    faces.delete_faces(ctx, "desk", [biden_face])
    exchange.export_faces(ctx, "desk", tmp_path / "v2.npz")
    out = exchange.import_faces(door, "door", tmp_path / "v2.npz", source_collection_id="desk", replace=True)
    assert out["RemovedFaces"] == 1 and out["RemovedUsers"] == ["biden"]
    hits = search.search_faces_by_image(door, "door", faces_dir / "people/biden/2.jpg", 90)["FaceMatches"]
    assert hits == []
    assert [u["UserId"] for u in users.list_users(door, "door")["Users"]] == ["obama"]
    door.store.close()


# -- a file is untrusted input: checked whole, then applied in one transaction ----------------
def _desk_export(ctx, faces_dir, tmp_path, name="desk.npz"):
    """A real desk collection (obama with a badge, biden) exported to a real file."""
    from facelink.enroll import credentials

    faces.create_collection(ctx, "desk")
    for who in ("obama", "biden"):
        users.create_user(ctx, "desk", who)
        faces.index_faces(ctx, "desk", faces_dir / "people" / who / "1.jpg", f"{who}-1", user_id=who)
    credentials.put_user_credential(ctx, "desk", "obama", "H10301:18:1")
    exchange.export_faces(ctx, "desk", tmp_path / name)
    return tmp_path / name


def _rewrite(src, dst, mutate=None, embeddings=None, meta_bytes=None):
    """``src`` re-written with its meta changed by ``mutate`` (checksum fixed up), as a crafted or
    broken exporter would write it."""
    import hashlib
    import json

    with np.load(src) as data:
        meta, matrix = json.loads(bytes(data["meta"])), data["embeddings"].copy()
    if embeddings is not None:
        matrix = embeddings
    if mutate is not None:
        mutate(meta)
    meta["EmbeddingsSha256"] = hashlib.sha256(np.ascontiguousarray(matrix).tobytes()).hexdigest()
    raw = meta_bytes if meta_bytes is not None else json.dumps(meta).encode()
    np.savez(dst, embeddings=matrix, meta=np.frombuffer(raw, np.uint8))
    return dst


def _state(ctx, collection_id):
    """Everything an import may change in a collection."""
    s = ctx.store
    return (s.get_collection(collection_id),
            [(f.face_id, f.user_id, f.embedding.tobytes()) for f in s.collection_faces(collection_id)],
            s.list_users(collection_id, "", 1000), s.credentials(collection_id),
            s.query("SELECT count(*) FROM face_vectors")[0][0])


def _door_with_roster(tmp_path, engine, good):
    door = Context(Store(tmp_path / "door.db"), lambda: engine)
    exchange.import_faces(door, "door", good, source_collection_id="desk", replace=True)
    return door


def test_a_failed_replace_leaves_the_roster_as_it_was(ctx, faces_dir, tmp_path, engine):
    """Two rows with one FaceId (a broken exporter): refused before anything is written. Before
    the fix the import deleted the door's faces and users, then failed on UNIQUE(face_id)."""
    good = _desk_export(ctx, faces_dir, tmp_path)
    door = _door_with_roster(tmp_path, engine, good)
    before = _state(door, "door")
    assert len(before[1]) == 2 and before[3] == {"obama": "H10301:18:1"}

    def duplicate(meta):
        meta["Users"] = ["newcomer"]
        meta["Credentials"] = {}
        for f in meta["Faces"]:
            f["FaceId"], f["UserId"] = "0" * 8 + "-0000-4000-8000-" + "0" * 12, "newcomer"
    bad = _rewrite(good, tmp_path / "dup.npz", duplicate)
    with pytest.raises(InvalidParameterException, match="appears twice"):
        exchange.import_faces(door, "door", bad, source_collection_id="desk", replace=True)
    assert _state(door, "door") == before
    door.store.close()


def test_a_replace_failing_in_the_store_is_rolled_back_whole(ctx, faces_dir, tmp_path, engine):
    """A write that fails half-way (here the database refuses the new face rows, as a full disk
    would) rolls back the deletions, re-associations and badges made before it: one transaction."""
    from facelink.enroll import credentials
    from facelink.errors import StoreError

    good = _desk_export(ctx, faces_dir, tmp_path)
    door = _door_with_roster(tmp_path, engine, good)
    before = _state(door, "door")
    # at the desk: biden leaves, obama's badge is re-issued, a newcomer is enrolled
    biden = faces.list_faces(ctx, "desk", user_id="biden")["Faces"][0]["FaceId"]
    users.delete_user(ctx, "desk", "biden")
    faces.delete_faces(ctx, "desk", [biden])
    credentials.put_user_credential(ctx, "desk", "obama", "H10301:18:7")
    users.create_user(ctx, "desk", "newcomer")
    faces.index_faces(ctx, "desk", faces_dir / "people/biden/2.jpg", "n-1", user_id="newcomer")
    exchange.export_faces(ctx, "desk", tmp_path / "v2.npz")
    with door.store.transaction() as c:
        c.execute("CREATE TRIGGER refuse_faces BEFORE INSERT ON faces BEGIN "
                  "SELECT RAISE(ABORT, 'database or disk is full'); END")
    with pytest.raises(StoreError):
        exchange.import_faces(door, "door", tmp_path / "v2.npz", source_collection_id="desk", replace=True)
    assert _state(door, "door") == before
    with door.store.transaction() as c:
        c.execute("DROP TRIGGER refuse_faces")
    out = exchange.import_faces(door, "door", tmp_path / "v2.npz", source_collection_id="desk", replace=True)
    assert out["RemovedUsers"] == ["biden"] and out["ImportedFaces"] == 1
    assert door.store.credentials("door") == {"obama": "H10301:18:7"}
    door.store.close()


def test_a_merge_refused_for_a_badge_conflict_adds_nothing(ctx, faces_dir, tmp_path, engine):
    """Without --replace: the file's badge belongs to another user of the door. ConflictException,
    and none of the file's users or faces were added (before the fix they were, badge-less)."""
    from facelink.enroll import credentials
    from facelink.errors import ConflictException

    good = _desk_export(ctx, faces_dir, tmp_path)
    door = Context(Store(tmp_path / "door.db"), lambda: engine)
    faces.create_collection(door, "door")
    users.create_user(door, "door", "guard")
    credentials.put_user_credential(door, "door", "guard", "H10301:18:1")
    before = _state(door, "door")
    with pytest.raises(ConflictException, match="already belongs to user 'guard'"):
        exchange.import_faces(door, "door", good, source_collection_id="desk")
    assert _state(door, "door") == before
    door.store.close()


FACE_ID = "8c2b6a4e-1f3d-4a5b-9c7d-0e1f2a3b4c5d"


def _set(path, value):
    """mutate(meta): meta[path...] = value (``...`` of a missing key: deleted)."""
    def mutate(meta):
        obj = meta
        for key in path[:-1]:
            obj = obj[key]
        if value is ...:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return mutate


CRAFTED = {
    "face_of_a_user_not_in_Users": _set(("Faces", 0, "UserId"), "ghost"),
    "FaceId_not_a_uuid": _set(("Faces", 0, "FaceId"), "not-a-uuid"),
    "FaceId_upper_case": _set(("Faces", 0, "FaceId"), FACE_ID.upper()),
    "UserId_with_a_newline": _set(("Users",), ["obama", "biden", "ghost\nline"]),
    "ExternalImageId_control_character": _set(("Faces", 0, "ExternalImageId"), "o\x001"),
    "ImageId_control_character": _set(("Faces", 0, "ImageId"), "i\x1b[2J"),
    "Confidence_text": _set(("Faces", 0, "Confidence"), "high"),
    "Confidence_out_of_range": _set(("Faces", 0, "Confidence"), 1e9),
    "Confidence_NaN": _set(("Faces", 0, "Confidence"), float("nan")),
    "BoundingBox_infinite": _set(("Faces", 0, "BoundingBox"), {"Width": float("inf")}),
    "BoundingBox_text": _set(("Faces", 0, "BoundingBox"), {"Width": "wide"}),
    "BoundingBox_unknown_key": _set(("Faces", 0, "BoundingBox"), {"Depth": 1.0}),
    "face_without_ImageId": _set(("Faces", 0, "ImageId"), ...),
    "face_not_an_object": _set(("Faces", 0), "x"),
    "Faces_an_object": _set(("Faces",), {"a": 1, "b": 2}),  # as long as the embeddings
    "meta_without_Faces": _set(("Faces",), ...),
    "Users_not_a_list": _set(("Users",), 7),
    "Users_twice": _set(("Users",), ["obama", "biden", "obama"]),
    "Credentials_not_an_object": _set(("Credentials",), ["H10301:18:1"]),
    "Credential_a_number": _set(("Credentials", "obama"), 5),
    "Credential_nonsense": _set(("Credentials", "obama"), "nonsense"),
    "Credential_of_a_user_not_in_Users": _set(("Credentials", "ghost"), "H10301:18:9"),
    "one_badge_two_users": _set(("Credentials", "biden"), "H10301:18:1"),
    "CollectionId_control_character": _set(("CollectionId",), "desk\n"),
    "FaceModelVersion_a_number": _set(("FaceModelVersion",), 3),
    "FormatVersion_true": _set(("FormatVersion",), True),  # True == 1 in Python
    "ExportedAt_not_a_time": _set(("ExportedAt",), "yesterday"),
    "ExportedAt_without_zone": _set(("ExportedAt",), "2026-11-23T10:00:00"),
    "unknown_key": _set(("Grants",), ["everyone"]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_meta_is_refused_before_anything_is_written(ctx, faces_dir, tmp_path, engine, case):
    """Every row of the file is checked against one schema (enroll/validate.py's id rules): a
    face granting a user the door cannot list or delete, a non-UUID FaceId, control characters,
    wrong types -- InvalidParameterException, and the door is untouched (here it has no
    collection yet: none is created)."""
    good = _desk_export(ctx, faces_dir, tmp_path)
    bad = _rewrite(good, tmp_path / f"{case}.npz", CRAFTED[case])
    door = Context(Store(tmp_path / "door.db"), lambda: engine)
    with pytest.raises(InvalidParameterException):
        exchange.import_faces(door, "door", bad, source_collection_id="desk")
    assert door.store.get_collection("door") is None
    assert door.store.query("SELECT count(*) FROM faces")[0][0] == 0
    door.store.close()


@pytest.mark.parametrize("meta", [b"[1, 2, 3]", b"[" * 50_000 + b"]" * 50_000,
                                  b'{"Faces": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001])
def test_meta_that_is_not_an_export_object_is_refused(ctx, faces_dir, tmp_path, engine, meta):
    """Not an object, or nested past any recursion limit: InvalidParameterException (a
    traceback, AttributeError or RecursionError, before the fix)."""
    good = _desk_export(ctx, faces_dir, tmp_path)
    bad = _rewrite(good, tmp_path / "bad.npz", meta_bytes=meta)
    door = Context(Store(tmp_path / "door.db"), lambda: engine)
    with pytest.raises(InvalidParameterException):
        exchange.import_faces(door, "door", bad, source_collection_id="desk")
    assert door.store.get_collection("door") is None
    door.store.close()


def test_cli_refuses_a_crafted_file_with_exit_2(ctx, faces_dir, tmp_path, monkeypatch):
    """Through the real command: a typed error on stderr and exit 2, never a traceback."""
    from click.testing import CliRunner

    from facelink.enroll.cli import cli

    good = _desk_export(ctx, faces_dir, tmp_path)
    monkeypatch.setenv("FACELINK_STORE__DATABASE", str(tmp_path / "door-cli.db"))
    runner = CliRunner()
    for case in ("face_of_a_user_not_in_Users", "meta_without_Faces", "Confidence_text", "Users_not_a_list"):
        bad = _rewrite(good, tmp_path / f"{case}.npz", CRAFTED[case])
        res = runner.invoke(cli, ["import-faces", "--collection-id", "door", "--source-collection-id", "desk",
                                  "--input", str(bad)])
        assert res.exit_code == 2 and "InvalidParameterException" in res.output, (case, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), case


def _peak_while(fn):
    """Peak traced memory (Python objects and numpy arrays) while ``fn`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_decompression_bomb_is_refused_without_inflating_it(ctx, faces_dir, tmp_path, engine):
    """A small .npz whose embeddings inflate to 100 MB of zeros for a 2-face list: refused from the
    zip's declared sizes and the .npy header before any of it is decompressed (the old reader
    inflated it all, then compared shapes)."""
    import json
    import os

    good = _desk_export(ctx, faces_dir, tmp_path)
    with np.load(good) as data:
        meta = bytes(data["meta"])
    zeros = np.zeros((200_000, 128), np.float32)
    np.savez_compressed(tmp_path / "bomb.npz", embeddings=zeros, meta=np.frombuffer(meta, np.uint8))
    del zeros
    assert os.path.getsize(tmp_path / "bomb.npz") < 1_000_000
    door = Context(Store(tmp_path / "door.db"), lambda: engine)

    def refused():
        with pytest.raises(InvalidParameterException, match="too large|does not match"):
            exchange.import_faces(door, "door", tmp_path / "bomb.npz", source_collection_id="desk")
    assert _peak_while(refused) < 20_000_000
    # headers that lie: 2**40 rows announced, or the 2 rows of meta announced but not there
    import io
    import zipfile

    for rows in (2 ** 40, 2):
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False,
                                                    "shape": (rows, 128)})
        with zipfile.ZipFile(tmp_path / "liar.npz", "w") as z:
            z.writestr("embeddings.npy", head.getvalue())
            z.writestr("meta.npy", _npy_bytes(meta))
        with pytest.raises(InvalidParameterException, match="embeddings.npy"):
            exchange.import_faces(door, "door", tmp_path / "liar.npz", source_collection_id="desk")
    assert json.loads(meta)["Faces"] and door.store.get_collection("door") is None
    door.store.close()


def _npy_bytes(raw: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.frombuffer(raw, np.uint8))
    return buf.getvalue()


def test_an_oversized_meta_or_signature_is_refused_without_reading_it(ctx, faces_dir, tmp_path, engine):
    """meta is capped at MAX_META_BYTES, signature at MAX_SIGNATURE_BYTES, from the sizes the zip
    declares: a 257 MiB meta of blanks (300 KB on disk) is not decompressed."""
    import zipfile

    from facelink.fleet.signing import generate_keypair

    good = _desk_export(ctx, faces_dir, tmp_path)
    with np.load(good) as data:
        emb = data["embeddings"].copy()
    over = exchange.MAX_META_BYTES + (1 << 20)
    with zipfile.ZipFile(tmp_path / "meta-bomb.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("embeddings.npy", _npy_array(emb))
        with z.open("meta.npy", "w", force_zip64=True) as f:
            head = np.lib.format.magic(1, 0)
            f.write(head)
            chunk = b" " * (1 << 20)
            for _ in range(over >> 20):
                f.write(chunk)
    door = Context(Store(tmp_path / "door.db"), lambda: engine)

    def refused():
        with pytest.raises(InvalidParameterException, match="meta.npy: .* too large"):
            exchange.import_faces(door, "door", tmp_path / "meta-bomb.npz", source_collection_id="desk")
    assert _peak_while(refused) < 20_000_000
    # a signed door: a 1 MiB signature member is refused before it is parsed
    generate_keypair(tmp_path / "k" / "desk.key", tmp_path / "k" / "desk.pub")
    with np.load(good) as data:
        meta = bytes(data["meta"])
    with zipfile.ZipFile(tmp_path / "sig-bomb.npz", "w") as z:
        z.writestr("embeddings.npy", _npy_array(emb))
        z.writestr("meta.npy", _npy_bytes(meta))
        z.writestr("signature.npy", _npy_bytes(b"[" * (1 << 20)))
    with pytest.raises(InvalidParameterException, match="signature.npy: .* too large"):
        exchange.import_faces(door, "door", tmp_path / "sig-bomb.npz", source_collection_id="desk",
                              trusted_keys=[tmp_path / "k" / "desk.pub"])
    assert door.store.get_collection("door") is None
    door.store.close()


def _npy_array(a) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()
