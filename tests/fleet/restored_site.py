"""The restored desk of the end-to-end fleet tests (test_history_fingerprint.py,
test_desk_restore_held.py, test_desk_restore_review87.py): the Site of
test_desk_clock_stepped_back.py with a desk database that is backed up and restored."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

from facelink.enroll.db import sqlite_driver
from facelink.enroll.store import Store
from tests.waiting import round_trip

from .test_desk_clock_stepped_back import Site
from .test_follower import T

Change = Callable[[Store], object]


class RestoredSite(Site):
    """The Site of test_desk_clock_stepped_back.py with a desk database that can be backed up and
    restored (the desk stopped), and a door that can be offline: what the desk publishes then never
    reaches it (its persistent session lost it)."""

    @classmethod
    def backed_up(cls, door, keys, broker, listeners, desk_db, tmp_path: Path,  # noqa: F811
                  history: Sequence[Change]) -> tuple[RestoredSite, Path]:
        """ann (the snapshot at seq 1), then ``history``, the desk's changes (one change set
        each): the first at seq 2, after which the desk's database is backed up (the desk stopped)
        and the desk started again (a heartbeat: the next set's ``prev`` read from the journal
        after a restart), the rest at seq 3, 4, ...; then a heartbeat: the door has them all.
        Returns the running site and the backup (at seq 2)."""
        first, *later = history
        site = cls.with_ann(door, keys, broker, listeners, desk_db)
        backup = tmp_path / "desk-backup.db"
        site.start()
        site.exchange()  # the rebase; the door takes a snapshot
        _desk_change(site, first)
        site.stop()
        site.backup(backup)
        site.start()
        site.heartbeat()
        for change in later:
            _desk_change(site, change)
        site.heartbeat()
        return site, backup

    def backup(self, to: Path) -> None:
        _copy(self.db, to)

    def restore(self, frm: Path) -> None:
        _copy(frm, self.db)

    def lose_retained_head(self) -> None:
        """The broker forgets the retained head (restarted without persistence): a desk started
        then cannot tell its history went back (fleet/publisher.py holds a collection only on a
        head signed by its key beyond its journal), so only the doors' own checks are left. The
        empty retained message that clears it never reaches the door's follower."""
        assert self.inbox.client.publish(T.head, "", qos=1, retain=True)
        self.inbox.wait_live()
        messages = self.inbox.snapshot()
        assert {(t, p) for t, p in messages[self._seen:] if t != self.inbox.probe_topic} == {(T.head, b"")}
        self._seen = len(messages)

    def offline_step(self) -> None:
        desk = self.desk
        assert desk is not None
        desk.step()
        assert round_trip(lambda m: desk.client.publish(self.inbox.probe_topic, m, qos=1),
                          lambda m: (self.inbox.probe_topic, m.encode()) in self.inbox.snapshot(), 30)
        self._seen = len(self.inbox.snapshot())


def _copy(frm: Path, to: Path) -> None:
    """A consistent copy of the SQLite database ``frm`` (its -wal included) over ``to``."""
    with closing(sqlite3.connect(frm)) as src, closing(sqlite3.connect(to)) as dst:
        src.backup(dst)


def _live_copy(frm: Path, to: Path) -> None:
    """:func:`_copy` while the desk runs: with the desk's own SQLite library (a second SQLite
    library in this process would drop the desk's POSIX locks as it closes the file)."""
    driver = sqlite_driver()
    with closing(driver.connect(str(frm))) as src, closing(driver.connect(str(to))) as dst:
        src.backup(dst)


def _desk_change(site: RestoredSite, change: Change, offline: bool = False) -> None:
    with Store(site.db) as store:
        change(store)
    site.offline_step() if offline else site.exchange()
