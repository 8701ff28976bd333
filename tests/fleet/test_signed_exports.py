"""Signed exports: a door with trusted keys imports only files signed by the desk, unaltered."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from facelink.enroll import exchange, faces, users
from facelink.enroll.cli import cli
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.errors import ConfigError, ConflictException, InvalidSignatureException
from facelink.fleet.signing import generate_keypair, load_private


@pytest.fixture()
def desk(ctx, faces_dir, tmp_path):
    faces.create_collection(ctx, "staff")
    users.create_user(ctx, "staff", "obama")
    faces.index_faces(ctx, "staff", faces_dir / "people/obama/1.jpg", "o", user_id="obama")
    keys = tmp_path / "keys"
    generate_keypair(keys / "desk.key", keys / "desk.pub")
    generate_keypair(keys / "other.key", keys / "other.pub")
    return ctx, keys


def _door(tmp_path, engine):
    return Context(Store(tmp_path / "door.db"), lambda: engine)


def test_signed_file_is_imported_and_a_tampered_one_refused(desk, tmp_path, engine):
    ctx, keys = desk
    assert stat.S_IMODE((keys / "desk.key").stat().st_mode) == 0o600
    out = exchange.export_faces(ctx, "staff", tmp_path / "signed.npz", sign_key=keys / "desk.key")
    assert len(out["SignedBy"]) == 16
    door = _door(tmp_path, engine)
    got = exchange.import_faces(door, "door", tmp_path / "signed.npz", source_collection_id="staff",
                                trusted_keys=[keys / "desk.pub"])
    assert got["ImportedFaces"] == 1
    # the same file re-written with one changed embedding and its checksum fixed up: refused
    with np.load(tmp_path / "signed.npz") as data:
        meta = json.loads(bytes(data["meta"]).decode())
        emb, sig = data["embeddings"].copy(), data["signature"]
    emb[0, 0] += 0.01
    meta["EmbeddingsSha256"] = hashlib.sha256(emb.tobytes()).hexdigest()
    with open(tmp_path / "forged.npz", "wb") as f:
        np.savez(f, embeddings=emb, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), signature=sig)
    with pytest.raises(InvalidSignatureException, match="BAD_SIGNATURE"):
        exchange.import_faces(_door(tmp_path / "d2", engine), "door", tmp_path / "forged.npz",
                              source_collection_id="staff", trusted_keys=[keys / "desk.pub"])


def test_unsigned_and_foreign_files_are_refused(desk, tmp_path, engine):
    ctx, keys = desk
    exchange.export_faces(ctx, "staff", tmp_path / "plain.npz")
    exchange.export_faces(ctx, "staff", tmp_path / "other.npz", sign_key=keys / "other.key")
    door = _door(tmp_path, engine)
    with pytest.raises(InvalidSignatureException, match="UNSIGNED"):
        exchange.import_faces(door, "door", tmp_path / "plain.npz", source_collection_id="staff", trusted_keys=[keys / "desk.pub"])
    with pytest.raises(InvalidSignatureException, match="UNKNOWN_KEY"):
        exchange.import_faces(door, "door", tmp_path / "other.npz", source_collection_id="staff", trusted_keys=[keys / "desk.pub"])
    assert door.store.get_collection("door") is None  # nothing was changed
    assert zipfile.is_zipfile(tmp_path / "plain.npz")


def test_keys_must_be_private(tmp_path):
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    with pytest.raises(ConfigError, match="exists"):
        generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_private(tmp_path / "k")


def test_cli_keygen_export_import(desk, tmp_path, monkeypatch):
    ctx, _ = desk
    monkeypatch.setenv("FACELINK_STORE__DATABASE", str(ctx.store.path))
    runner = CliRunner()
    res = runner.invoke(cli, ["fleet", "keygen", "--private-key", str(tmp_path / "cli.key"),
                              "--public-key", str(tmp_path / "cli.pub")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["export-faces", "--collection-id", "staff", "--output", str(tmp_path / "x.npz"),
                              "--sign-key", str(tmp_path / "cli.key")])
    assert res.exit_code == 0 and "SignedBy" in res.output, res.output
    monkeypatch.setenv("FACELINK_STORE__DATABASE", str(tmp_path / "door-cli.db"))
    monkeypatch.setenv("FACELINK_FLEET__TRUSTED_KEYS", json.dumps([str(tmp_path / "cli.pub")]))
    res = runner.invoke(cli, ["import-faces", "--collection-id", "door", "--source-collection-id", "staff",
                              "--input", str(tmp_path / "x.npz")])
    assert res.exit_code == 0, res.output
    exchange.export_faces(ctx, "staff", tmp_path / "unsigned.npz")
    res = runner.invoke(cli, ["import-faces", "--collection-id", "door", "--source-collection-id", "staff",
                              "--input", str(tmp_path / "unsigned.npz")])
    assert res.exit_code == 10 and "InvalidSignatureException" in res.output


def test_an_older_signed_export_cannot_undo_a_revocation(desk, tmp_path, engine, faces_dir):
    """Replay of yesterday's signed file after today's revocation: refused, the user stays revoked."""
    ctx, keys = desk
    users.create_user(ctx, "staff", "biden")
    faces.index_faces(ctx, "staff", faces_dir / "people/biden/1.jpg", "b", user_id="biden")
    trusted = [keys / "desk.pub"]
    exchange.export_faces(ctx, "staff", tmp_path / "monday.npz", sign_key=keys / "desk.key")
    users.delete_user(ctx, "staff", "biden")  # revoked at the desk
    exchange.export_faces(ctx, "staff", tmp_path / "tuesday.npz", sign_key=keys / "desk.key")
    door = _door(tmp_path, engine)
    exchange.import_faces(door, "door", tmp_path / "tuesday.npz", replace=True, source_collection_id="staff", trusted_keys=trusted)
    assert door.store.user_exists("door", "obama") and not door.store.user_exists("door", "biden")
    with pytest.raises(ConflictException, match="older than the one already imported"):
        exchange.import_faces(door, "door", tmp_path / "monday.npz", replace=True, source_collection_id="staff", trusted_keys=trusted)
    assert not door.store.user_exists("door", "biden")
    assert "biden" not in {f.user_id for f in door.store.collection_faces("door")}
    # the same file again is fine (idempotent); an operator may roll back on purpose
    exchange.import_faces(door, "door", tmp_path / "tuesday.npz", replace=True, source_collection_id="staff", trusted_keys=trusted)
    exchange.import_faces(door, "door", tmp_path / "monday.npz", replace=True, source_collection_id="staff", trusted_keys=trusted,
                          allow_older=True)
    assert door.store.user_exists("door", "biden")


def test_a_signed_export_of_another_collection_is_refused(desk, tmp_path, engine, faces_dir, monkeypatch):
    """The desk signs exports of every collection (here also 'visitors', for a lobby kiosk). A
    door importing into 'door' from 'staff' refuses the visitors file whatever its date:
    InvalidSignatureException WRONG_COLLECTION (exit 10), nothing changes. The source must be
    named when it differs from the target (it defaults to the target)."""
    ctx, keys = desk
    faces.create_collection(ctx, "visitors")
    users.create_user(ctx, "visitors", "visitor-9")
    faces.index_faces(ctx, "visitors", faces_dir / "people/biden/1.jpg", "v", user_id="visitor-9")
    trusted = [keys / "desk.pub"]
    exchange.export_faces(ctx, "staff", tmp_path / "staff.npz", sign_key=keys / "desk.key")
    exchange.export_faces(ctx, "visitors", tmp_path / "visitors.npz", sign_key=keys / "desk.key")  # newer
    door = _door(tmp_path, engine)
    exchange.import_faces(door, "door", tmp_path / "staff.npz", source_collection_id="staff", replace=True,
                          trusted_keys=trusted)
    roster = [f.face_id for f in door.store.collection_faces("door")]
    with pytest.raises(InvalidSignatureException, match="WRONG_COLLECTION: .*'visitors', expected 'staff'"):
        exchange.import_faces(door, "door", tmp_path / "visitors.npz", source_collection_id="staff",
                              replace=True, trusted_keys=trusted)
    with pytest.raises(InvalidSignatureException, match="WRONG_COLLECTION"):  # source defaults to the target
        exchange.import_faces(door, "door", tmp_path / "staff.npz", replace=True, trusted_keys=trusted)
    assert [f.face_id for f in door.store.collection_faces("door")] == roster
    assert [u for u, _ in door.store.list_users("door", "", 10)] == ["obama"]
    # through the command
    monkeypatch.setenv("FACELINK_STORE__DATABASE", str(door.store.path))
    runner = CliRunner()
    res = runner.invoke(cli, ["import-faces", "--collection-id", "door", "--source-collection-id", "staff",
                              "--input", str(tmp_path / "visitors.npz"), "--replace", "--trusted-key", str(trusted[0])])
    assert res.exit_code == 10 and "WRONG_COLLECTION" in res.output, res.output
    assert [u for u, _ in door.store.list_users("door", "", 10)] == ["obama"]
    # the visitors file is fine where it belongs
    exchange.import_faces(door, "lobby", tmp_path / "visitors.npz", source_collection_id="visitors",
                          trusted_keys=trusted)
    assert door.store.user_exists("lobby", "visitor-9")


def test_the_rollback_record_is_kept_per_source_and_target(desk, tmp_path, engine, faces_dir):
    """The last signed ExportedAt is remembered per (source, target): another source's newer file
    neither moves staff's mark nor is refused for being older than it. An old door's record (kept
    per target only) still guards until that source's first import."""
    ctx, keys = desk
    trusted = [keys / "desk.pub"]
    faces.create_collection(ctx, "contractors")
    users.create_user(ctx, "contractors", "plumber")
    exchange.export_faces(ctx, "contractors", tmp_path / "contractors-mon.npz", sign_key=keys / "desk.key")
    users.create_user(ctx, "staff", "biden")
    faces.index_faces(ctx, "staff", faces_dir / "people/biden/1.jpg", "b", user_id="biden")
    exchange.export_faces(ctx, "staff", tmp_path / "staff-mon.npz", sign_key=keys / "desk.key")
    users.delete_user(ctx, "staff", "biden")
    exchange.export_faces(ctx, "staff", tmp_path / "staff-tue.npz", sign_key=keys / "desk.key")
    door = _door(tmp_path, engine)

    def imp(name, source, **kw):
        return exchange.import_faces(door, "door", tmp_path / name, source_collection_id=source,
                                     trusted_keys=trusted, **kw)
    imp("staff-tue.npz", "staff", replace=True)
    imp("contractors-mon.npz", "contractors")  # older than staff's Tuesday file: another source
    assert door.store.user_exists("door", "plumber")
    with pytest.raises(ConflictException, match="older than the one already imported"):
        imp("staff-mon.npz", "staff", replace=True)
    assert not door.store.user_exists("door", "biden")
    # a door whose record predates source collections: the per-target record still applies
    old = _door(tmp_path / "old", engine)
    exchange.import_faces(old, "door", tmp_path / "staff-tue.npz", source_collection_id="staff",
                          trusted_keys=trusted, replace=True)
    with old.store.transaction() as c:
        mark = c.execute("SELECT value FROM meta WHERE key = 'signed_import_exported_at:staff:door'").fetchone()[0]
        c.execute("DELETE FROM meta WHERE key LIKE 'signed_import_exported_at:%'")
        c.execute("INSERT INTO meta VALUES ('signed_import_exported_at:door', ?)", (mark,))
    with pytest.raises(ConflictException, match="older than the one already imported"):
        exchange.import_faces(old, "door", tmp_path / "staff-mon.npz", source_collection_id="staff",
                              trusted_keys=trusted, replace=True)
    assert not old.store.user_exists("door", "biden")
