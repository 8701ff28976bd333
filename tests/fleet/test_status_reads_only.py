"""`facelink fleet status` reads the desk's journal and writes nothing (found in review): it opened
the database read-write, which created the journal's tables in a database that had none and, run
as another user (root, the operator's shell), could leave -wal/-shm files the desk cannot open."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from facelink.enroll.store import Store
from facelink.fleet.journal import Journal
from facelink.fleet.status import _desk_heads


def _state(folder: Path) -> dict[str, str]:
    """Every file in ``folder``, with its content's digest."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _settings(db: Path) -> SimpleNamespace:
    return SimpleNamespace(store=SimpleNamespace(database=db, group_access=False))


def test_the_desk_heads_are_read_from_a_journal_left_as_it_was(tmp_path):
    db = tmp_path / "desk" / "facelink.db"
    db.parent.mkdir()
    journal = Journal(db)
    for _ in range(3):
        entry = journal.append("staff", "sface-v1", 1, lambda seq, _previous: f"set {seq}".encode())
        journal.published("staff", entry.seq)
    journal.append("staff", "sface-v1", 2, lambda seq, _previous: b"not acknowledged yet")
    journal.close()
    before = _state(db.parent)
    assert _desk_heads(_settings(db)) == {"staff": 3}
    assert _state(db.parent) == before


def test_a_database_the_desk_never_published_from_is_not_given_a_journal(tmp_path):
    db = tmp_path / "enroll" / "facelink.db"
    db.parent.mkdir()
    Store(db).close()
    before = _state(db.parent)
    assert _desk_heads(_settings(db)) == {}
    assert _state(db.parent) == before
    with Store(db, readonly=True) as store:
        tables = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "fleet_journal" not in tables and "fleet_heads" not in tables


def test_a_journal_the_desk_is_writing_is_read_with_its_latest_sets(tmp_path):
    """While the desk runs (its -wal and -shm exist), status reads through them: a set the
    broker acknowledged a moment ago counts, and no file appears or goes."""
    db = tmp_path / "desk" / "facelink.db"
    db.parent.mkdir()
    journal = Journal(db)
    try:
        journal.published("staff", journal.append("staff", "sface-v1", 1, lambda seq, _previous: b"first").seq)
        names = sorted(p.name for p in db.parent.iterdir())
        assert "facelink.db-shm" in names
        assert _desk_heads(_settings(db)) == {"staff": 1}
        journal.published("staff", journal.append("staff", "sface-v1", 2, lambda seq, _previous: b"second").seq)
        assert _desk_heads(_settings(db)) == {"staff": 2}
        assert sorted(p.name for p in db.parent.iterdir()) == names
    finally:
        journal.close()


class StoppedDesk:
    """A desk database whose desk published seq 1 and stopped (no -shm); :meth:`start` is the desk
    starting again and publishing seq 2 (it keeps its connection, so its -shm, until ``close``)."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "desk" / "facelink.db"
        self.db.parent.mkdir()
        journal = Journal(self.db)
        journal.published("staff", journal.append("staff", "sface-v1", 1, lambda seq, _previous: b"first").seq)
        journal.close()
        self.running: Journal | None = None

    def start(self) -> None:
        self.running = Journal(self.db)
        self.running.published("staff", self.running.append("staff", "sface-v1", 2, lambda seq, _previous: b"second").seq)

    def close(self) -> None:
        if self.running is not None:
            self.running.close()


def test_a_desk_started_during_the_read_is_read_again(tmp_path, monkeypatch):
    """No -shm when status opened the journal (the desk stopped), so it read it as immutable; the
    desk started and published during that read: what it published since is in its -wal, which an
    immutable read ignores. Status reads again, through the -wal (found in review: a stale report)."""
    desk, collections = StoppedDesk(tmp_path), Journal.collections

    def desk_starts_meanwhile(self: Journal) -> list[str]:
        if desk.running is None:  # the desk starts and publishes seq 2 while status reads
            desk.start()
        return collections(self)

    monkeypatch.setattr(Journal, "collections", desk_starts_meanwhile)
    try:
        assert _desk_heads(_settings(desk.db)) == {"staff": 2}
    finally:
        desk.close()



def test_a_read_torn_by_a_desk_starting_is_read_again(tmp_path, monkeypatch):
    """The same, when the immutable read failed (pages a checkpoint rewrote under it): read again
    through the desk's -wal, not an error. With no desk started, the error stands."""
    from facelink.errors import StoreError

    desk, collections = StoppedDesk(tmp_path), Journal.collections

    def torn(self: Journal) -> list[str]:
        if self.immutable:
            if starts:  # the desk starts and publishes seq 2 while status reads
                desk.start()
            raise StoreError("fleet journal read failed: database disk image is malformed")
        return collections(self)

    monkeypatch.setattr(Journal, "collections", torn)
    starts = False
    with pytest.raises(StoreError):  # no writer appeared: nothing to read again
        _desk_heads(_settings(desk.db))
    starts = True
    try:
        assert _desk_heads(_settings(desk.db)) == {"staff": 2}
    finally:
        desk.close()
