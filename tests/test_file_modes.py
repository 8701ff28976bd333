"""Biometric and audit data at rest: files 0600, folders FaceLink creates 0700 (under umask 022),
0640/0750 only when store.group_access is configured; an older world-readable file is tightened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from facelink.audit.store import AuditLog
from facelink.config.paths import private_dir, private_file
from facelink.enroll.store import Store
from facelink.mqtt.outbox import Outbox


@pytest.fixture(autouse=True)
def usual_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_collection_outbox_and_audit_files_are_private(tmp_path):
    store = Store(tmp_path / "lib" / "facelink" / "facelink.db")
    outbox = Outbox(tmp_path / "lib" / "facelink" / "outbox.db")
    outbox.put("e1", "t", {"x": 1})
    audit = AuditLog(tmp_path / "audit" / "audit.db", tmp_path / "audit" / "decisions.jsonl")
    audit.record({"event_id": "1", "timestamp": "t", "decision": "GRANTED", "device_id": "d"})
    files = [tmp_path / "lib/facelink/facelink.db", tmp_path / "lib/facelink/outbox.db",
             tmp_path / "audit/audit.db", tmp_path / "audit/decisions.jsonl"]
    wal = [f.with_name(f.name + suffix) for f in files[:3] for suffix in ("-wal", "-shm")]
    assert all(w.exists() for w in wal)  # WAL mode: these hold recent data too
    for f in files + wal:
        assert mode(f) == 0o600, f
    for d in (tmp_path / "lib", tmp_path / "lib/facelink", tmp_path / "audit"):
        assert mode(d) == 0o700, d
    store.close()
    outbox.close()
    audit.close()


def test_export_file_is_private(ctx, tmp_path):
    from facelink.enroll import exchange, faces

    faces.create_collection(ctx, "staff")
    out = exchange.export_faces(ctx, "staff", tmp_path / "exports" / "staff.npz")
    assert mode(Path(out["Output"])) == 0o600 and mode(tmp_path / "exports") == 0o700


def test_old_world_readable_files_are_tightened(tmp_path):
    db = tmp_path / "outbox.db"
    db.touch()
    os.chmod(db, 0o644)
    Outbox(db).close()
    assert mode(db) == 0o600


def test_group_access_by_configuration(tmp_path):
    f = private_file(tmp_path / "shared" / "audit.db", group=True)
    assert mode(f) == 0o640 and mode(f.parent) == 0o750
    store = Store(tmp_path / "g" / "facelink.db", group_access=True)
    assert mode(tmp_path / "g" / "facelink.db") == 0o640
    store.close()


def test_existing_folders_are_not_changed(tmp_path):
    shared = tmp_path / "var"
    shared.mkdir()
    os.chmod(shared, 0o755)
    private_dir(shared / "facelink" / "x")
    assert mode(shared) == 0o755  # not ours
    assert mode(shared / "facelink") == 0o700 and mode(shared / "facelink" / "x") == 0o700


def test_logger_cli_writes_private_files(tmp_path):
    from facelink.audit.logger import main

    db = tmp_path / "new" / "audit.db"
    assert main(["--db", str(db), "query"]) == 0
    assert mode(db) == 0o600 and mode(db.parent) == 0o700


def test_a_folder_or_device_named_as_a_file_is_refused_not_chmodded(tmp_path):
    """Found in review (helper-88): since private_file stopped opening an existing file it chmod-ed
    whatever the path named, so a folder given as a database (``audit.database =
    /var/lib/facelink``) became 0600 and nothing in it could be opened any more; before, the
    open failed (EISDIR) and the folder was left alone. Refused now, as a typed error, unchanged."""
    from facelink.errors import ConfigError, StoreError

    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    with pytest.raises(IsADirectoryError):
        private_file(data)
    with pytest.raises(ConfigError):
        AuditLog(data)
    with pytest.raises(ConfigError):
        Outbox(data)
    with pytest.raises(StoreError):
        Store(data)
    assert mode(data) == 0o755
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o644)
    with pytest.raises(OSError):
        private_file(fifo)
    assert mode(fifo) == 0o644
    target = tmp_path / "real.db"
    target.touch()
    os.chmod(target, 0o644)
    (tmp_path / "link.db").symlink_to(target)  # a symlink to a file: followed, as before
    private_file(tmp_path / "link.db")
    assert mode(target) == 0o600
