"""Store-and-forward outbox: every decision is written here before it is published and is
removed only after the broker acknowledged it (PUBACK).

Bounded: when ``max_events`` is reached the oldest event is dropped to make room, the drop is
counted (reported on the health topic) and logged at ERROR. With the default 100,000 events a
door deciding every 10 s can be offline for more than 11 days before that happens.

Numbered: every event put here is published with ``event_stream`` (this outbox's id, drawn once
when the file is created) and ``event_seq`` (1, 2, 3, … in the order put, never reused), so the
audit logger can say exactly which of a door's events it never received (``facelink-logger
gaps``): one the outbox dropped when full, or one lost after its PUBACK (a broker restarted
without persistence while the logger was offline). An outbox file from before the numbering gets
its stream at the first open, counted from 1. A record published directly (the outbox refused
it: disk full) carries neither.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from facelink.config.paths import private_file
from facelink.errors import ConfigError

if TYPE_CHECKING:
    from .client import Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxEvent:
    seq: int
    event_id: str
    topic: str
    payload: str


class Outbox:
    def __init__(self, path: Path | str, max_events: int = 100_000, *, group: bool = False) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self._lock = threading.Lock()
        try:
            private_file(self.path, group=group)  # 0600 before SQLite creates it (and its -wal/-shm)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                         timeout=10)
            self._init_schema()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"mqtt.outbox: cannot open {self.path}: {exc}") from None
        self.added = threading.Event()

    def _init_schema(self) -> None:
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")  # a decision survives power loss
        self._conn.execute("""CREATE TABLE IF NOT EXISTS events(
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at REAL NOT NULL)""")
        self._conn.execute("CREATE TABLE IF NOT EXISTS stats(key TEXT PRIMARY KEY, value INTEGER)")
        self._conn.execute("CREATE TABLE IF NOT EXISTS stream(key TEXT PRIMARY KEY, value)")
        self._conn.execute("BEGIN IMMEDIATE")  # the stream's id and base: drawn once, at the first open
        try:
            self._conn.execute("INSERT OR IGNORE INTO stream VALUES ('id', ?)", (secrets.token_hex(16),))
            self._conn.execute("INSERT OR IGNORE INTO stream VALUES ('base', ?)", (self._last_seq(),))
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        rows = dict(self._conn.execute("SELECT key, value FROM stream").fetchall())
        self.stream: str = str(rows["id"])
        self._base = int(rows["base"])  # events numbered before the stream began (an older outbox)

    def _last_seq(self) -> int:
        """The last ``seq`` given to an event (AUTOINCREMENT: never given again, even once deleted)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def put(self, event_id: str, topic: str, payload: dict) -> None:
        """Durably append, numbered (``event_stream``, ``event_seq`` added to a copy of
        ``payload``); raises sqlite3.Error (e.g. disk full) so the caller fails closed. An event id
        already in the outbox is not put again (nor numbered again)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                seq = self._last_seq() + 1
                numbered = {**payload, "event_stream": self.stream, "event_seq": seq - self._base}
                self._conn.execute("INSERT OR IGNORE INTO events(seq, event_id, topic, payload, created_at) "
                                   "VALUES (?,?,?,?,?)",
                                   (seq, event_id, topic, json.dumps(numbered, separators=(",", ":")),
                                    time.time()))
                excess = self._conn.execute("SELECT count(*) FROM events").fetchone()[0] - self.max_events
                if excess > 0:
                    self._conn.execute("DELETE FROM events WHERE seq IN "
                                       "(SELECT seq FROM events ORDER BY seq LIMIT ?)", (excess,))
                    self._conn.execute("INSERT INTO stats VALUES ('dropped', ?) ON CONFLICT(key) "
                                       "DO UPDATE SET value = value + excluded.value", (excess,))
                    log.error("outbox full (%d events): dropped the %d oldest", self.max_events, excess)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLITE_FULL may have rolled back already
                    self._conn.execute("ROLLBACK")
                raise
        self.added.set()

    def peek(self, limit: int = 1, *, after: int = 0) -> list[OutboxEvent]:
        """The oldest ``limit`` events whose ``seq`` is above ``after`` (0: from the first)."""
        with self._lock:
            rows = self._conn.execute("SELECT seq, event_id, topic, payload FROM events WHERE seq > ? "
                                      "ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        return [OutboxEvent(*r) for r in rows]

    def ack(self, seqs: list[int]) -> None:
        """Remove acknowledged events, all in one transaction (one fsync for a window of PUBACKs)."""
        if not seqs:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def dropped(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM stats WHERE key = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def publish_directly(transport: Transport, topic: str, payload: dict, what: str) -> bool:
    """The last resort for a record the outbox could not take (e.g. disk full): publish it to the
    broker now. True when the broker acknowledged it; otherwise it is lost, and said so at CRITICAL
    (``what`` names it). Never raises: what it records has happened already. Waits for the
    broker's acknowledgement (up to the transport's 5 s): call it holding no lock that the door's
    outputs need (the relay, Wiegand and OSDP output threads call it as they report)."""
    try:
        if transport.publish(topic, json.dumps(payload)):
            return True
        log.critical("cannot publish %s either (not connected, or not acknowledged): it is lost", what)
    except Exception:  # noqa: BLE001 - nothing left to tell it to
        log.critical("cannot publish %s either: it is lost", what, exc_info=True)
    return False


def put_or_publish(outbox: Outbox, transport: Transport, event_id: str, topic: str, payload: dict, what: str) -> bool:
    """A follow-up record (ACTUATION_FAILED, a panel record): into the outbox, or, when it cannot
    take it, :func:`publish_directly`. True when it is in the outbox or acknowledged. Never raises."""
    try:
        outbox.put(event_id, topic, payload)
        return True
    except Exception:  # noqa: BLE001 - e.g. disk full: try the broker directly
        log.critical("cannot record %s in the outbox", what, exc_info=True)
    return publish_directly(transport, topic, payload, what)
