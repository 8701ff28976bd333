"""The audit log database: every valid decision once (by event id), every access panel's verdict
on a door's card read once (``panel_verdicts``, joined to its decision in queries as ``panel``),
every opening a panel commanded (``panel_outputs``, with the read it most likely answers) and
every output off it commanded (with the pulse it ended, ``refers_to``, and the older ones
it cut short too, ``earlier_pulses``: ``panel_output_ends``),
every door's sync alarm (``alarms``: a change set or head it refused), and a quarantine table for
every message that was none of these. ``received``: when this logger first stored each event, on
its own clock (a table of its own, so that an older logger sharing the file keeps working).
``sequenced``: each event's number in its door's outbox (``event_stream``, ``event_seq``; the
quarantined ones too), from which :meth:`AuditLog.gaps` lists the numbers never received.

MQTT QoS 1 is at-least-once, so a redelivered decision is recognised by its event id and stored
once. Files are private (0600, folder 0700; config/paths.py).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facelink.config.paths import open_private, private_file
from facelink.errors import ConfigError
from facelink.mqtt.schema import EVENT_SEQ_MAX, EVENT_STREAM, parse_timestamp

log = logging.getLogger(__name__)

QUARANTINE_KEEP_BYTES = 64 * 1024  # raw bytes kept per quarantined message (the size is recorded)
MIRROR_LOG_EVERY_S = 60.0  # a JSONL mirror that cannot be written: one ERROR line per period

SCHEMA = """CREATE TABLE IF NOT EXISTS decisions(
    event_id TEXT PRIMARY KEY, timestamp TEXT NOT NULL, device_id TEXT, decision TEXT NOT NULL,
    user_id TEXT, external_image_id TEXT, similarity REAL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_user ON decisions(user_id, timestamp);
CREATE INDEX IF NOT EXISTS decisions_device ON decisions(device_id, timestamp);
CREATE TABLE IF NOT EXISTS panel_verdicts(
    event_id TEXT PRIMARY KEY, timestamp TEXT NOT NULL, device_id TEXT NOT NULL,
    decision_event_id TEXT NOT NULL, verdict TEXT NOT NULL, credential TEXT, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS panel_verdicts_decision ON panel_verdicts(decision_event_id);
CREATE TABLE IF NOT EXISTS panel_outputs(
    event_id TEXT PRIMARY KEY, timestamp TEXT NOT NULL, device_id TEXT NOT NULL, likely_for TEXT,
    relay TEXT NOT NULL, refers_to TEXT, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS panel_outputs_device ON panel_outputs(device_id, timestamp);
CREATE INDEX IF NOT EXISTS panel_outputs_likely_for ON panel_outputs(likely_for);
CREATE INDEX IF NOT EXISTS panel_outputs_refers_to ON panel_outputs(refers_to);
CREATE TABLE IF NOT EXISTS panel_output_ends(
    event_id TEXT NOT NULL, device_id TEXT NOT NULL, pulse_for TEXT NOT NULL,
    PRIMARY KEY(event_id, pulse_for));
CREATE INDEX IF NOT EXISTS panel_output_ends_pulse_for ON panel_output_ends(pulse_for);
CREATE TABLE IF NOT EXISTS alarms(
    event_id TEXT PRIMARY KEY, timestamp TEXT NOT NULL, device_id TEXT NOT NULL, collection_id TEXT,
    reason TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS received(
    kind TEXT NOT NULL, event_id TEXT NOT NULL, received_at TEXT NOT NULL, PRIMARY KEY(kind, event_id));
CREATE TABLE IF NOT EXISTS sequenced(
    device_id TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    event_id TEXT NOT NULL, PRIMARY KEY(device_id, stream, seq));
CREATE TABLE IF NOT EXISTS sequence_reused(
    device_id TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    event_id TEXT NOT NULL, PRIMARY KEY(device_id, stream, seq, kind, event_id));
CREATE TABLE IF NOT EXISTS quarantine(
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, topic TEXT NOT NULL,
    reason TEXT NOT NULL, size INTEGER NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS acknowledged(
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, by TEXT NOT NULL, reason TEXT NOT NULL,
    device_id TEXT NOT NULL, stream TEXT NOT NULL, what TEXT NOT NULL CHECK(what IN ('missing', 'reused')),
    first INTEGER NOT NULL, last INTEGER NOT NULL, CHECK(1 <= first AND first <= last));
CREATE INDEX IF NOT EXISTS acknowledged_stream ON acknowledged(device_id, stream, what, first);
CREATE TABLE IF NOT EXISTS acknowledged_reused(
    ack_id INTEGER NOT NULL REFERENCES acknowledged(id), device_id TEXT NOT NULL, stream TEXT NOT NULL,
    seq INTEGER NOT NULL, kind TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY(device_id, stream, seq, kind, event_id));
CREATE TRIGGER IF NOT EXISTS acknowledged_no_update BEFORE UPDATE ON acknowledged
    BEGIN SELECT RAISE(ABORT, 'acknowledgments are append-only'); END;
CREATE TRIGGER IF NOT EXISTS acknowledged_no_delete BEFORE DELETE ON acknowledged
    BEGIN SELECT RAISE(ABORT, 'acknowledgments are append-only'); END;
CREATE TRIGGER IF NOT EXISTS acknowledged_reused_no_update BEFORE UPDATE ON acknowledged_reused
    BEGIN SELECT RAISE(ABORT, 'acknowledgments are append-only'); END;
CREATE TRIGGER IF NOT EXISTS acknowledged_reused_no_delete BEFORE DELETE ON acknowledged_reused
    BEGIN SELECT RAISE(ABORT, 'acknowledgments are append-only'); END;"""


# the panel's output offs that ended a decision's relay pulse: its own or that of an opening the
# panel commanded for it (whose likely_for names the decision), named by the off's refers_to (in
# panel_outputs itself: every logger stores it) or earlier_pulses (panel_output_ends); each of the
# decision's door only, and each off once (UNION: one that ended several of them is one row). Found
# in review: joined through panel_output_ends alone, an off an older logger stored on the database
# after the new one had filled that table (the service during an upgrade) never showed.
_ENDED_BY = """SELECT d.event_id, p.payload, p.timestamp, p.rowid FROM decisions d CROSS JOIN panel_outputs p
    INDEXED BY panel_outputs_refers_to
    WHERE p.refers_to = d.event_id AND p.device_id = d.device_id AND p.relay = 'ended' AND {where}
UNION
SELECT d.event_id, p.payload, p.timestamp, p.rowid FROM decisions d CROSS JOIN panel_output_ends e
    CROSS JOIN panel_outputs p
    WHERE e.pulse_for = d.event_id AND e.device_id = d.device_id AND p.event_id = e.event_id AND {where}
UNION
SELECT d.event_id, p.payload, p.timestamp, p.rowid FROM decisions d CROSS JOIN panel_outputs o
    CROSS JOIN panel_outputs p INDEXED BY panel_outputs_refers_to
    WHERE o.likely_for = d.event_id AND o.device_id = d.device_id AND p.refers_to = o.event_id
    AND p.device_id = o.device_id AND p.relay = 'ended' AND {where}
UNION
SELECT d.event_id, p.payload, p.timestamp, p.rowid FROM decisions d CROSS JOIN panel_outputs o
    CROSS JOIN panel_output_ends e CROSS JOIN panel_outputs p
    WHERE o.likely_for = d.event_id AND o.device_id = d.device_id AND e.pulse_for = o.event_id
    AND e.device_id = o.device_id AND p.event_id = e.event_id AND {where}
ORDER BY 3, 4"""  # CROSS JOIN: SQLite keeps this order (from the query's decisions, by the indexes)


_EVENT_TABLES = ("decisions", "panel_verdicts", "panel_outputs", "alarms")


def _of_door(column: str, device: str | None) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause keeping one door's rows (by ``column``), or none: two statements rather than
    ``? IS NULL OR …``, which no index serves (found in review)."""
    return (f"WHERE {column} = ?", (device,)) if device is not None else ("", ())


def _numbered(topic: str, raw: bytes) -> tuple[Any, Any, Any]:
    """The door (from the topic) and ``event_stream``/``event_seq`` of a quarantined message, where
    it is a JSON object naming them (untrusted: checked again by the caller); else Nones."""
    parts = topic.split("/")
    try:
        obj = json.loads(raw) if len(raw) <= QUARANTINE_KEEP_BYTES else None
    except (ValueError, RecursionError):
        return None, None, None
    if len(parts) < 3 or not isinstance(obj, dict):
        return None, None, None
    return parts[-2], obj.get("event_stream"), obj.get("event_seq")


def instant(ts: str | None) -> str | None:
    """A timestamp as the column and the bounds compare it: UTC, spelled as the door writes it
    (``datetime.isoformat()``), so that strings order as instants whatever zone an event or a
    ``--since`` was written in. Anything else (a bare date, which then reads as UTC) is unchanged."""
    if ts is None:
        return None
    try:
        return parse_timestamp(ts).astimezone(timezone.utc).isoformat()
    except (ValueError, TypeError):
        return ts


class Conflict(Exception):
    """An event id already recorded with other content: not a redelivery (the first stays)."""


class Refused(ValueError):
    """An acknowledgment not recorded: invalid input, or it names numbers that are not missing (or
    not reused), or that are acknowledged already. Nothing of it was written."""


class Unwritable(Exception):
    """An acknowledgment not recorded because the audit database could not be written now (busy:
    another writer held it longer than the connection's timeout; read-only; disk full). Nothing of
    it was written. Found in review 94: a traceback."""


ACK_BY_MAX = 200  # characters of --by
ACK_REASON_MAX = 4000  # characters of --reason
ACK_RANGES_MAX = 1000  # --missing/--reused ranges in one command (found in review 94: thousands held
# the database's write lock for seconds, and the running logger, waiting longer than its timeout,
# acknowledged and so lost the events it was handed meanwhile)
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _odd(name: str, ch: str) -> bool:
    """A character not accepted in ``by``/``reason`` (found in review 94: only C0 controls were
    refused; a C1 control, a line or paragraph separator or a bidi override reads as a forged log
    line or reorders the text in a terminal, and a lone surrogate — bytes that are not UTF-8 on the
    command line — was a traceback). ``by`` names someone: no invisible characters either."""
    cat = unicodedata.category(ch)
    if ch in "\n\t":
        return name == "by"
    return (cat in ("Cc", "Cs", "Co", "Zl", "Zp") or ch in _BIDI or ch == "\ufffd"
            or (name == "by" and cat == "Cf"))


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Refused(f"{name}: required, not blank")
    if len(value) > limit:
        raise Refused(f"{name}: at most {limit} characters ({len(value)} given)")
    if any(_odd(name, ch) for ch in value):
        raise Refused(f"{name}: control characters are not accepted (nor line separators, invisible or "
                      "bidirectional-override characters, or bytes that are not UTF-8)")
    return value.strip()


def _range(name: str, value: Any) -> tuple[int, int]:
    """``(first, last)`` from ``(first, last)`` or ``"N"`` / ``"N-M"``, each 1..EVENT_SEQ_MAX."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]{1,19})\s*(?:-\s*([0-9]{1,19})\s*)?", value)
        if m is None:
            raise Refused(f"{name}: {value[:40]!r} is not a number or a range FIRST-LAST")
        value = (int(m[1]), int(m[2] if m[2] is not None else m[1]))
    if (not isinstance(value, tuple) or len(value) != 2 or any(type(v) is not int for v in value)):
        raise Refused(f"{name}: not a range of numbers")
    first, last = value
    if not 1 <= first <= last <= EVENT_SEQ_MAX:
        raise Refused(f"{name}: {first}-{last} is not a range within 1-{EVENT_SEQ_MAX} (first <= last)")
    return first, last


@dataclass(frozen=True)
class Quarantined:
    id: int
    received_at: str
    topic: str
    reason: str
    size: int
    raw: bytes


class AuditLog:
    def __init__(self, path: Path | str, jsonl: Path | str | None = None, *, group: bool = False) -> None:
        try:
            path = private_file(path, group=group)  # 0600 before SQLite creates it (and its -wal/-shm)
            self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")  # a record is on disk before its PUBACK
            self._conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"audit.database: cannot open {path}: {exc}") from None
        self._jsonl = Path(jsonl) if jsonl is not None else None
        self._group = group
        self._lock = threading.Lock()
        self._mirror_said_at = -1e9
        self._mirror_missed = 0

    def record(self, payload: dict[str, Any], *, received_at: str | None = None) -> bool:
        """Store a validated decision payload; True when new, False for a redelivered event id.
        ``received_at``: when this logger first had it (default now; ``requeue``: when it was
        quarantined)."""
        return self._insert("decisions", (payload["event_id"], instant(payload.get("timestamp", "")), payload.get("device_id"),
                                          payload["decision"], payload.get("user_id"),
                                          payload.get("external_image_id"), payload.get("similarity")), payload,
                            received_at=received_at)

    def record_panel(self, payload: dict[str, Any], *, received_at: str | None = None) -> bool:
        """Store a validated panel verdict (facelink.panel/1); True when new."""
        return self._insert("panel_verdicts", (payload["event_id"], instant(payload["timestamp"]), payload["device_id"],
                                               payload["decision_event_id"], payload["verdict"],
                                               payload.get("credential")), payload, received_at=received_at)

    def record_panel_output(self, payload: dict[str, Any], *, received_at: str | None = None) -> bool:
        """Store a validated opening the panel commanded or output off (facelink.panel-output/1),
        with every pulse an off ended (its ``refers_to`` and ``earlier_pulses``) in
        ``panel_output_ends``; True when new."""
        ends = []
        if payload["relay"] == "ended":
            ends = [(payload["event_id"], payload["device_id"], pulse)
                    for pulse in [payload.get("refers_to"), *(payload.get("earlier_pulses") or [])] if pulse is not None]
        return self._insert("panel_outputs", (payload["event_id"], instant(payload["timestamp"]), payload["device_id"],
                                              payload.get("likely_for"), payload["relay"], payload.get("refers_to")),
                            payload, ends=ends, received_at=received_at)

    def _insert(self, table: str, columns: tuple[Any, ...], payload: dict[str, Any], *,
                mirror: bool = True, ends: Sequence[tuple[str, str, str]] = (),
                received_at: str | None = None) -> bool:
        """One event into ``table`` (its columns, then the payload as JSON) unless its event id is
        there already, and then into the JSONL mirror; True when new, False for a redelivery (the
        same content). ``Conflict`` when the event id is there with other content. ``ends``: the
        pulses an output off ended, into ``panel_output_ends`` in the same transaction."""
        with self._lock:
            with self._conn:  # one transaction: the event and its ends, or neither
                self._conn.execute("BEGIN")
                cur = self._conn.execute(
                    f"INSERT OR IGNORE INTO {table} VALUES ({','.join('?' * (len(columns) + 1))})",
                    (*columns, json.dumps(payload)))
                new = cur.rowcount == 1
                if new:  # this logger's own clock: an upper bound on when the door made it
                    self._conn.execute("INSERT OR IGNORE INTO received VALUES (?,?,?)",
                                       (table, columns[0], received_at or datetime.now(timezone.utc).isoformat()))
                if new and ends:
                    self._conn.executemany("INSERT OR IGNORE INTO panel_output_ends VALUES (?,?,?)", ends)
                if new:
                    self._sequence(payload.get("device_id"), payload.get("event_stream"),
                                   payload.get("event_seq"), table, str(columns[0]))
            if not new:
                row = self._conn.execute(f"SELECT payload FROM {table} WHERE event_id = ?", (columns[0],)).fetchone()
                if row is not None and json.loads(row[0]) != payload:
                    raise Conflict(f"event_id {columns[0]!r} already recorded with other content "
                                   f"(a redelivery is the same; the first one stays the record)")
            if new and mirror and self._jsonl is not None:
                self._mirror(payload)
        return new

    def _mirror(self, payload: dict[str, Any]) -> None:
        """Append a new record to the JSONL mirror. It is committed to the database (the record)
        already: a mirror that cannot be written (disk full, permissions) is said at ERROR, at most
        once a minute with how many since, and does not undo the record (found in review 100: the
        OSError made the intake try again, find the event id recorded and acknowledge it without
        a word, the decision neither mirrored nor printed)."""
        try:
            with open_private(self._jsonl, "a", group=self._group) as f:
                f.write(json.dumps(payload) + "\n")
        except OSError as exc:
            self._mirror_missed += 1
            now = time.monotonic()
            if now - self._mirror_said_at >= MIRROR_LOG_EVERY_S:
                log.error("audit.jsonl: cannot append to %s (%s: %s): %d record(s) in the database only, "
                          "not in the mirror", self._jsonl, type(exc).__name__, exc, self._mirror_missed)
                self._mirror_said_at, self._mirror_missed = now, 0

    def panel_outputs(self, since: str | None = None, device: str | None = None) -> list[dict[str, Any]]:
        """The openings doors' access panels commanded (and their relay failures) and the output
        offs (``relay`` ended / not_ended / left_running / off_failed), oldest first."""
        return self._listed("panel_outputs", since, device)

    def record_alarm(self, payload: dict[str, Any], *, received_at: str | None = None) -> bool:
        """Store a validated sync alarm (facelink.alarm/1); True when new."""
        return self._insert("alarms", (payload["event_id"], instant(payload["timestamp"]), payload["device_id"],
                                       payload.get("collection_id"), payload["reason"]), payload, mirror=False,
                            received_at=received_at)

    def alarms(self, since: str | None = None, device: str | None = None) -> list[dict[str, Any]]:
        return self._listed("alarms", since, device)

    def _listed(self, table: str, since: str | None, device: str | None) -> list[dict[str, Any]]:
        """The payloads in ``table`` from ``since`` on (of one ``device``), oldest first, each with
        ``received_at`` (this logger's clock) where it was stored by a logger that keeps it."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT t.payload, r.received_at FROM {table} t LEFT JOIN received r "
                "ON r.kind = ? AND r.event_id = t.event_id WHERE t.timestamp >= ? "
                "AND (? IS NULL OR t.device_id = ?) ORDER BY t.timestamp, t.rowid",
                (table, instant(since) or "", device, device)).fetchall()
        return [{**json.loads(payload), **({"received_at": at} if at is not None else {})} for payload, at in rows]

    def quarantine(self, topic: str, raw: bytes, reason: str) -> None:
        """Keep a message that is not a valid decision, with why, for the security staff. One that
        names its door's outbox number (a door's event a logger cannot read, e.g. an older logger
        than the door) counts as received for :meth:`gaps`: it is here, in the quarantine."""
        with self._lock:
            with self._conn:
                self._conn.execute("BEGIN")
                cur = self._conn.execute(
                    "INSERT INTO quarantine(received_at, topic, reason, size, raw) VALUES (?,?,?,?,?)",
                    (datetime.now(timezone.utc).isoformat(), topic[:1024], reason[:1000], len(raw),
                     bytes(raw[:QUARANTINE_KEEP_BYTES])))
                device, stream, seq = _numbered(topic, raw)
                self._sequence(device, stream, seq, "quarantine", str(cur.lastrowid))

    def release(self, quarantine_id: int, kind: str, event_id: str) -> None:
        """A quarantined message recorded since (``facelink-logger requeue``): out of the
        quarantine; its number, if it had one, now names the record (``kind``, ``event_id``)."""
        with self._lock:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.execute("DELETE FROM quarantine WHERE id = ?", (quarantine_id,))
                self._conn.execute("UPDATE sequenced SET kind = ?, event_id = ? WHERE kind = 'quarantine' "
                                   "AND event_id = ?", (kind, event_id, str(quarantine_id)))

    def _sequence(self, device: Any, stream: Any, seq: Any, kind: str, ref: str) -> None:
        """Note event ``seq`` of ``device``'s outbox ``stream`` as received (``kind``: the table it
        is in, ``ref`` its id there); the first one of a number stays. In the caller's transaction,
        under the lock. Says (WARNING) when it leaves numbers unreceived after the last one."""
        if not (isinstance(device, str) and isinstance(stream, str) and type(seq) is int
                and 1 <= seq <= EVENT_SEQ_MAX and re.fullmatch(EVENT_STREAM, stream)):
            return
        row = self._conn.execute("SELECT max(seq) FROM sequenced WHERE device_id = ? AND stream = ?",
                                 (device, stream)).fetchone()
        self._conn.execute("INSERT INTO sequenced VALUES (?,?,?,?,?) ON CONFLICT DO UPDATE SET kind = excluded.kind, "
                           "event_id = excluded.event_id WHERE kind = 'quarantine' AND excluded.kind != 'quarantine'",
                           (device, stream, seq, kind, ref))  # a record stands for a quarantined copy
        held = self._conn.execute("SELECT kind, event_id FROM sequenced WHERE device_id = ? AND stream = ? "
                                  "AND seq = ?", (device, stream, seq)).fetchone()
        if kind != "quarantine" and held is not None and held[0] != "quarantine" and tuple(held) != (kind, ref):
            # another record holds the number (found in review: kept silently): an outbox restored
            # from a backup numbers again what it had numbered, and the events lost with it go unseen
            self._conn.execute("INSERT OR IGNORE INTO sequence_reused VALUES (?,?,?,?,?)", (device, stream, seq, kind, ref))
            log.warning("door %s: number %d of its outbox %s was given to two events (%s, %s): an outbox "
                        "restored from a copy? events recorded after that copy may be lost", device[:64], seq,
                        stream, held[1], ref)
        last = row[0] if row and row[0] is not None else 0
        # a quarantined one is logged by the intake, at most every LOG_EVERY_S (found in review: a
        # flood of numbered garbage was a WARNING each)
        if seq > last + 1 and kind != "quarantine":
            log.warning("door %s: events %d to %d of its outbox %s not received (yet)", device[:64], last + 1,
                        seq - 1, stream)

    def gaps(self, device: str | None = None, *, after_first: bool = False,
             acknowledged: bool = False) -> list[dict[str, Any]]:
        """The numbers of each door's outbox stream this log never received (neither recorded nor
        quarantined), oldest first: ``{device_id, event_stream, first, last, missing, after,
        before}`` where ``after``/``before`` are the received events around the gap (``kind``,
        ``event_id``, ``event_seq`` and, for a recorded one, its ``timestamp``; ``after`` None for
        numbers missing before the first one received; ``after_first``: leave those out — a log
        started, or started afresh, after the doors). Numbers after a stream's last received one
        cannot be known here: :meth:`streams` gives each stream's last. Numbers a security manager
        signed off (:meth:`acknowledge`) are left out; ``acknowledged``: listed too, each run of
        them with ``acknowledged`` (the sign-off: ``id``, ``at``, ``by``, ``reason``) — a gap part
        signed off is split into its runs, each with the ``after``/``before`` of the whole gap."""
        where, params = _of_door("device_id", device)
        out: list[dict[str, Any]] = []
        with self._lock:
            rows = self._conn.execute(
                "SELECT device_id, stream, prev, seq FROM (SELECT device_id, stream, seq, "
                "lag(seq, 1, 0) OVER (PARTITION BY device_id, stream ORDER BY seq) AS prev "
                f"FROM sequenced {where}) WHERE seq > prev + 1 "
                "ORDER BY device_id, stream, seq", params).fetchall()
            for d, stream, prev, seq in rows:
                if after_first and not prev:
                    continue
                gap = {"device_id": d, "event_stream": stream, "after": self._around(d, stream, prev) if prev else None,
                       "before": self._around(d, stream, seq)}
                for first, last, ack in self._runs(d, stream, prev + 1, seq - 1):
                    if ack is None or acknowledged:
                        out.append({"device_id": d, "event_stream": stream, "first": first, "last": last,
                                    "missing": last - first + 1, "after": gap["after"], "before": gap["before"],
                                    **({"acknowledged": ack} if ack is not None else {})})
        return out

    def _runs(self, device: str, stream: str, first: int, last: int) -> list[tuple[int, int, dict[str, Any] | None]]:
        """The numbers ``first``..``last`` (all missing) as runs, each with the sign-off that covers
        it or None (the sign-offs of a stream's missing numbers never overlap)."""
        acks = self._conn.execute(
            "SELECT id, at, by, reason, first, last FROM acknowledged WHERE device_id = ? AND stream = ? "
            "AND what = 'missing' AND first <= ? AND last >= ? ORDER BY first",
            (device, stream, last, first)).fetchall()
        runs: list[tuple[int, int, dict[str, Any] | None]] = []
        at = first
        for ack_id, when, by, reason, a_first, a_last in acks:
            if a_first > at:
                runs.append((at, a_first - 1, None))
            lo, hi = max(at, a_first), min(last, a_last)
            runs.append((lo, hi, {"id": ack_id, "at": when, "by": by, "reason": reason}))
            at = hi + 1
        if at <= last:
            runs.append((at, last, None))
        return runs

    def streams(self, device: str | None = None) -> list[dict[str, Any]]:
        """Each door's outbox streams as received here: ``{device_id, event_stream, first, last,
        received, missing, reused, acknowledged_missing, acknowledged_reused, last_event}``
        (``missing``: numbers between 1 and ``last`` never received and not signed off;
        ``reused``: numbers another record of the door held already — its outbox was restored
        from a copy, and what it recorded after that copy may be lost — with a second record not
        signed off; ``acknowledged_*``: those a security manager signed off, :meth:`acknowledge`;
        ``missing`` + ``acknowledged_missing`` is every number never received). A door whose
        outbox file was replaced starts a new stream."""
        where, params = _of_door("s.device_id", device)
        with self._lock:
            rows = self._conn.execute(
                "SELECT s.device_id, s.stream, min(s.seq), max(s.seq), count(*), "
                "(SELECT count(DISTINCT r.seq) FROM sequence_reused r WHERE r.device_id = s.device_id "
                "AND r.stream = s.stream), "
                "(SELECT count(DISTINCT r.seq) FROM sequence_reused r WHERE r.device_id = s.device_id "
                "AND r.stream = s.stream AND NOT EXISTS (SELECT 1 FROM acknowledged_reused a "
                "WHERE a.device_id = r.device_id AND a.stream = r.stream AND a.seq = r.seq AND a.kind = r.kind "
                "AND a.event_id = r.event_id)), "
                "(SELECT coalesce(sum(a.last - a.first + 1 - (SELECT count(*) FROM sequenced q WHERE "
                "q.device_id = a.device_id AND q.stream = a.stream AND q.seq BETWEEN a.first AND a.last)), 0) "
                "FROM acknowledged a WHERE a.device_id = s.device_id AND a.stream = s.stream AND a.what = 'missing') "
                f"FROM sequenced s {where} GROUP BY s.device_id, s.stream "
                "ORDER BY s.device_id, min(s.rowid)", params).fetchall()
            return [{"device_id": d, "event_stream": stream, "first": first, "last": last, "received": n,
                     "missing": last - n - acked, "reused": open_reused, "acknowledged_missing": acked,
                     "acknowledged_reused": reused - open_reused, "last_event": self._around(d, stream, last)}
                    for d, stream, first, last, n, reused, open_reused, acked in rows]

    def acknowledge(self, device: Any, stream: Any, *, by: Any, reason: Any, missing: Sequence[Any] = (),
                    reused: Sequence[Any] = (), at: str | None = None) -> list[dict[str, Any]]:
        """A security manager signs off numbers of ``device``'s outbox ``stream``: ``missing``
        ranges (each ``(first, last)`` or ``"N"``/``"N-M"``) whose every number is missing now — not
        received, not after the stream's last recorded (not quarantined) number, not signed off
        already — and ``reused`` ranges whose every number was given to a second event not signed
        off yet (each such record is signed off; a number given again later is not). ``by`` (who)
        and ``reason`` are required. All or nothing, appended (never changed nor deleted: the
        evidence stays in ``sequenced``/``sequence_reused``); ``Refused`` says why not. Returns the
        sign-offs recorded, as :meth:`acknowledgments` lists them."""
        by, reason = _text("by", by, ACK_BY_MAX), _text("reason", reason, ACK_REASON_MAX)
        if (not isinstance(device, str) or not device or len(device) > 256
                or any(unicodedata.category(ch) in ("Cc", "Cs") for ch in device)):
            raise Refused("door: required (its device id; no control characters, UTF-8)")
        if not isinstance(stream, str) or not re.fullmatch(EVENT_STREAM, stream):
            raise Refused("stream: an outbox stream id (32 hexadecimal digits, as facelink-logger streams lists)")
        ranges = [("missing", *_range("missing", r)) for r in missing] + [("reused", *_range("reused", r)) for r in reused]
        if not ranges:
            raise Refused("nothing to acknowledge: name --missing and/or --reused numbers")
        if len(ranges) > ACK_RANGES_MAX:
            raise Refused(f"{len(ranges)} ranges: at most {ACK_RANGES_MAX} in one command (name a run of "
                          "numbers as one range FIRST-LAST)")
        # before the write lock is taken, and sorted (found in review 94: each range against every
        # other one, inside the transaction, held the running logger off for seconds)
        for what in ("missing", "reused"):
            runs = sorted((first, last) for w, first, last in ranges if w == what)
            for (a_first, a_last), (b_first, b_last) in zip(runs, runs[1:]):
                if b_first <= a_last:
                    raise Refused(f"{what}: {a_first}-{a_last} and {b_first}-{b_last} overlap")
        when = at or datetime.now(timezone.utc).isoformat()
        try:
            return self._acknowledge(device, stream, by, reason, ranges, when)
        except sqlite3.OperationalError as exc:
            raise Unwritable(f"the audit database could not be written ({exc}): a busy database (another "
                             "writer) may be tried again") from None

    def _acknowledge(self, device: str, stream: str, by: str, reason: str,
                     ranges: list[tuple[str, int, int]], when: str) -> list[dict[str, Any]]:
        with self._lock:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")  # the checks and the sign-off see the same log
                (last_seq,) = self._conn.execute("SELECT max(seq) FROM sequenced WHERE device_id = ? AND stream = ?",
                                                 (device, stream)).fetchone()
                if last_seq is None:
                    raise Refused(f"door {device[:64]!r} has no stream {stream} in this log (facelink-logger streams)")
                # a number is known missing only below one the log *recorded*: a quarantined message
                # can carry any number, and a sign-off up to it would cover losses still to come
                # (found in review 94)
                (recorded,) = self._conn.execute("SELECT max(seq) FROM sequenced WHERE device_id = ? AND stream = ? "
                                                 "AND kind != 'quarantine'", (device, stream)).fetchone()
                ids = []
                for what, first, last in ranges:
                    if what == "missing":
                        self._check_missing(device, stream, first, last, recorded or 0)
                    else:
                        self._check_reused(device, stream, first, last)
                    cur = self._conn.execute(
                        "INSERT INTO acknowledged(at, by, reason, device_id, stream, what, first, last) "
                        "VALUES (?,?,?,?,?,?,?,?)", (when, by, reason, device, stream, what, first, last))
                    ids.append(cur.lastrowid)
                    if what == "reused":
                        self._conn.execute(
                            "INSERT INTO acknowledged_reused SELECT ?, r.device_id, r.stream, r.seq, r.kind, r.event_id "
                            "FROM sequence_reused r WHERE r.device_id = ? AND r.stream = ? AND r.seq BETWEEN ? AND ? "
                            "AND NOT EXISTS (SELECT 1 FROM acknowledged_reused a WHERE a.device_id = r.device_id "
                            "AND a.stream = r.stream AND a.seq = r.seq AND a.kind = r.kind AND a.event_id = r.event_id)",
                            (cur.lastrowid, device, stream, first, last))
                made = self._acknowledgments("WHERE a.id BETWEEN ? AND ?", (min(ids), max(ids)))
        for ack in made:
            log.info("door %s: %s numbers %d-%d of its outbox %s acknowledged by %s: %s", device[:64], ack["what"],
                        ack["first"], ack["last"], stream, by[:64], reason[:200])
        return made

    def _check_missing(self, device: str, stream: str, first: int, last: int, last_seq: int) -> None:
        if last > last_seq:
            raise Refused(f"missing: {first}-{last}: the last number recorded of this stream is {last_seq} "
                          "(a quarantined one does not count: facelink-logger requeue records it once it can "
                          "be read); later numbers are not known to be missing")
        got = self._conn.execute("SELECT min(seq) FROM sequenced WHERE device_id = ? AND stream = ? "
                                 "AND seq BETWEEN ? AND ?", (device, stream, first, last)).fetchone()[0]
        if got is not None:
            raise Refused(f"missing: {first}-{last}: number {got} was received (facelink-logger gaps)")
        ack = self._conn.execute("SELECT id, first, last FROM acknowledged WHERE device_id = ? AND stream = ? "
                                 "AND what = 'missing' AND first <= ? AND last >= ? ORDER BY first LIMIT 1",
                                 (device, stream, last, first)).fetchone()
        if ack is not None:
            raise Refused(f"missing: {first}-{last}: numbers {max(first, ack[1])}-{min(last, ack[2])} were "
                          f"acknowledged already (#{ack[0]})")

    def _check_reused(self, device: str, stream: str, first: int, last: int) -> None:
        seqs = [row[0] for row in self._conn.execute(
            "SELECT DISTINCT r.seq FROM sequence_reused r WHERE r.device_id = ? AND r.stream = ? "
            "AND r.seq BETWEEN ? AND ? AND NOT EXISTS (SELECT 1 FROM acknowledged_reused a "
            "WHERE a.device_id = r.device_id AND a.stream = r.stream AND a.seq = r.seq AND a.kind = r.kind "
            "AND a.event_id = r.event_id) ORDER BY r.seq LIMIT ?", (device, stream, first, last, last - first + 1))]
        if len(seqs) != last - first + 1:
            expected = first
            for seq in seqs:
                if seq != expected:
                    break
                expected += 1
            raise Refused(f"reused: {first}-{last}: number {expected} was not given to a second event "
                          "(or that was acknowledged already; facelink-logger streams)")

    def acknowledgments(self, device: str | None = None) -> list[dict[str, Any]]:
        """Every sign-off, oldest first: ``{id, at, by, reason, device_id, event_stream, what
        (missing / reused), first, last}`` and, for ``missing``, ``still_missing`` (the numbers of it
        not received since); for ``reused``, ``events``: the second records it
        signed off (``event_seq``, ``kind``, ``event_id``)."""
        where, params = _of_door("a.device_id", device)
        with self._lock:
            return self._acknowledgments(where, params)

    def _acknowledgments(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        out = []
        for ack_id, when, by, reason, d, stream, what, first, last in self._conn.execute(
                "SELECT a.id, a.at, a.by, a.reason, a.device_id, a.stream, a.what, a.first, a.last "
                f"FROM acknowledged a {where} ORDER BY a.id", params).fetchall():
            row: dict[str, Any] = {"id": ack_id, "at": when, "by": by, "reason": reason, "device_id": d,
                                   "event_stream": stream, "what": what, "first": first, "last": last}
            if what == "missing":  # those received since the sign-off are no longer missing
                row["still_missing"] = last - first + 1 - self._conn.execute(
                    "SELECT count(*) FROM sequenced WHERE device_id = ? AND stream = ? AND seq BETWEEN ? AND ?",
                    (d, stream, first, last)).fetchone()[0]
            if what == "reused":
                row["events"] = [{"event_seq": seq, "kind": kind, "event_id": ref} for seq, kind, ref in self._conn.execute(
                    "SELECT seq, kind, event_id FROM acknowledged_reused WHERE ack_id = ? ORDER BY seq, rowid",
                    (ack_id,))]
            out.append(row)
        return out

    def _around(self, device: str, stream: str, seq: int) -> dict[str, Any]:
        kind, ref = self._conn.execute("SELECT kind, event_id FROM sequenced WHERE device_id = ? AND stream = ? "
                                       "AND seq = ?", (device, stream, seq)).fetchone()
        out: dict[str, Any] = {"kind": kind, "event_id": ref, "event_seq": seq}
        if kind in _EVENT_TABLES:
            row = self._conn.execute(f"SELECT timestamp FROM {kind} WHERE event_id = ?", (ref,)).fetchone()
            if row is not None:
                out["timestamp"] = row[0]
        return out

    def query(self, user: str | None = None, device: str | None = None, since: str | None = None,
              until: str | None = None, decision: str | None = None) -> list[dict[str, Any]]:
        """Decisions as published; one the door handed to an access panel carries the panel's
        answer(s) as ``panel`` (a list of facelink.panel/1 payloads) and the openings the panel
        then commanded that most likely carry it out as ``openings`` (facelink.panel-output/1
        whose ``likely_for`` names it; relay failures refer to those, not to the decision). A
        GRANTED whose relay pulse the panel's output off ended early carries that off as
        ``ended_by``: one that ended the decision's own pulse, or the pulse of an opening in its
        ``openings``. ``received_at``: when this logger first stored the decision, on its own
        clock — the door made it no later (its ``timestamp`` is the door's clock, which may be
        off: ``clock_synchronized`` false); absent for one stored by an older logger."""
        where, params = "1=1", []
        for col, op, val in (("user_id", "=", user), ("device_id", "=", device), ("timestamp", ">=", instant(since)),
                             ("timestamp", "<=", instant(until)), ("decision", "=", decision)):
            if val is not None:
                where += f" AND d.{col} {op} ?"
                params.append(val)
        with self._lock:
            rows = self._conn.execute(f"SELECT d.event_id, d.payload, r.received_at FROM decisions d "
                                      "LEFT JOIN received r ON r.kind = 'decisions' AND r.event_id = d.event_id "
                                      f"WHERE {where} ORDER BY d.timestamp", params).fetchall()
            joined: dict[str, dict[str, list[dict[str, Any]]]] = {"panel": {}, "openings": {}, "ended_by": {}}
            # only a record of the decision's own door: the ids in it are whatever that door wrote,
            # and another door's verdict or opening naming this decision is not this door's
            for key, table, ref in (("panel", "panel_verdicts", "decision_event_id"),
                                    ("openings", "panel_outputs", "likely_for")):
                for event_id, payload in self._conn.execute(
                        f"SELECT p.{ref}, p.payload FROM {table} p JOIN decisions d "
                        f"ON d.event_id = p.{ref} AND d.device_id = p.device_id WHERE {where} "
                        "ORDER BY p.timestamp, p.rowid", params):
                    joined[key].setdefault(event_id, []).append(json.loads(payload))
            for event_id, payload, _at, _row in self._conn.execute(_ENDED_BY.format(where=where), params * _ENDED_BY.count("{where}")):
                joined["ended_by"].setdefault(event_id, []).append(json.loads(payload))
        out = []
        for event_id, payload, received_at in rows:
            row = json.loads(payload)
            if received_at is not None:  # none for a decision an older logger stored
                row["received_at"] = received_at
            for key, found in joined.items():
                if event_id in found:
                    row[key] = found[event_id]
            out.append(row)
        return out

    def quarantined(self, since: str | None = None, *, after_id: int = 0,
                    limit: int | None = None) -> list[Quarantined]:
        """Quarantined messages from ``since`` on, by id (``after_id``, ``limit``: one page)."""
        with self._lock:
            rows = self._conn.execute("SELECT id, received_at, topic, reason, size, raw FROM quarantine "
                                      "WHERE received_at >= ? AND id > ? ORDER BY id LIMIT ?",
                                      (instant(since) or "", after_id, -1 if limit is None else limit)).fetchall()
        return [Quarantined(*r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
