"""Users' badge credentials: API, CLI, one holder per badge, carried by export/import, and an
existing database is migrated in place."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from facelink.enroll import credentials, exchange, faces, users
from facelink.enroll.cli import cli
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.errors import ConflictException, InvalidParameterException, ResourceNotFoundException


def _collection(ctx, *names):
    faces.create_collection(ctx, "staff")
    for n in names:
        users.create_user(ctx, "staff", n)


def test_put_get_delete_and_one_holder_per_badge(ctx):
    _collection(ctx, "alice", "bob")
    out = credentials.put_user_credential(ctx, "staff", "alice", "h10301:18:12345")
    assert out == {"UserId": "alice", "Credential": "H10301:18:12345"}
    assert ctx.store.user_by_credential("staff", "H10301:18:12345") == "alice"
    with pytest.raises(ConflictException, match="alice"):
        credentials.put_user_credential(ctx, "staff", "bob", "H10301:18:12345")
    with pytest.raises(InvalidParameterException):
        credentials.put_user_credential(ctx, "staff", "bob", "H10301:300:1")
    with pytest.raises(ResourceNotFoundException):
        credentials.put_user_credential(ctx, "staff", "carol", "H10301:1:1")
    credentials.delete_user_credential(ctx, "staff", "alice")
    assert credentials.get_user_credential(ctx, "staff", "alice")["Credential"] is None
    credentials.put_user_credential(ctx, "staff", "bob", "H10301:18:12345")  # re-issued
    assert ctx.store.user_by_credential("staff", "H10301:18:12345") == "bob"


def test_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELINK_STORE__DATABASE", str(tmp_path / "cli.db"))
    with Store(tmp_path / "cli.db") as store:
        store.insert_collection("staff", "v")
        store.insert_user("staff", "alice")
    runner = CliRunner()
    res = runner.invoke(cli, ["put-user-credential", "--collection-id", "staff", "--user-id", "alice",
                              "--credential", "H10304:7:300000"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["get-user-credential", "--collection-id", "staff", "--user-id", "alice"])
    assert json.loads(res.output)["Credential"] == "H10304:7:300000"
    res = runner.invoke(cli, ["put-user-credential", "--collection-id", "staff", "--user-id", "alice",
                              "--credential", "nonsense"])
    assert res.exit_code == 2 and "InvalidParameterException" in res.output


def test_export_import_carries_credentials(ctx, tmp_path, faces_dir, engine):
    _collection(ctx, "obama", "biden")
    faces.index_faces(ctx, "staff", faces_dir / "people/obama/1.jpg", "o", user_id="obama")
    credentials.put_user_credential(ctx, "staff", "obama", "H10301:18:1")
    credentials.put_user_credential(ctx, "staff", "biden", "H10301:18:2")
    exchange.export_faces(ctx, "staff", tmp_path / "staff.npz")
    with Store(tmp_path / "door.db") as door_store:
        door = Context(door_store, lambda: engine)
        exchange.import_faces(door, "door", tmp_path / "staff.npz", source_collection_id="staff")
        assert door_store.credentials("door") == {"obama": "H10301:18:1", "biden": "H10301:18:2"}
        # at the desk the badges are swapped and biden leaves; --replace follows
        credentials.delete_user_credential(ctx, "staff", "obama")
        credentials.put_user_credential(ctx, "staff", "biden", "H10301:18:1")
        credentials.put_user_credential(ctx, "staff", "obama", "H10301:18:2")
        exchange.export_faces(ctx, "staff", tmp_path / "staff2.npz")
        exchange.import_faces(door, "door", tmp_path / "staff2.npz", source_collection_id="staff",
                               replace=True)
        assert door_store.credentials("door") == {"obama": "H10301:18:2", "biden": "H10301:18:1"}


def test_schema_1_database_is_migrated(tmp_path):
    from facelink.enroll import store as store_mod

    path = tmp_path / "old.db"
    conn = store_mod.connect(path)
    conn.execute("BEGIN")
    for sql in store_mod.MIGRATIONS[1]:
        conn.execute(sql)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO collections VALUES ('staff', 'v', 0)")
    conn.execute("INSERT INTO users VALUES ('staff', 'alice', 0)")
    conn.execute("COMMIT")
    conn.close()
    with Store(path) as store:
        assert store.user_exists("staff", "alice")
        assert store.user_credential("staff", "alice") is None
        store.set_user_credential("staff", "alice", "H10301:1:1")
        assert store.query("SELECT value FROM meta WHERE key='schema_version'")[0][0] == str(store_mod.SCHEMA_VERSION)
