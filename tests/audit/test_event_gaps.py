"""Every event a door records is numbered in its outbox (``event_stream``, ``event_seq``: 1, 2, 3, …
never reused), and the audit logger lists the numbers it never received (``facelink-logger gaps``).
Before, an event lost between the door and the log — dropped by a full outbox while the door was
offline, or lost after its PUBACK (a broker restarted without persistence while the logger was
down) — left no trace anywhere: the log looked complete. Real outbox, real pump, real broker, the
real logger process and its command line."""

from __future__ import annotations

import json
import sqlite3

import paho.mqtt.client as mqtt

from facelink.audit.intake import Intake
from facelink.audit.logger import main as logger_main
from facelink.audit.store import AuditLog
from facelink.config import MqttSettings
from facelink.device.decision import DENIED_UNKNOWN, GRANTED, Decision
from facelink.mqtt.client import door_client
from facelink.mqtt.outbox import Outbox
from facelink.mqtt.pump import OutboxPump
from facelink.mqtt.topics import DeviceTopics
from tests.audit.test_fault_injection import LoggerProcess, _until_subscribed
from tests.waiting import wait_until

TOPIC = DeviceTopics("facelink", "front").decision


def _decision(user: str) -> dict:
    return Decision(GRANTED, "front", "staff", "m/1", 99.0, user_id=user, similarity=99.5).payload()


def _put(outbox: Outbox, *users: str) -> list[str]:
    ids = []
    for user in users:
        p = _decision(user)
        outbox.put(p["event_id"], TOPIC, p)
        ids.append(p["event_id"])
    return ids


def _cli(db, *args: str, capsys) -> tuple[int, list[dict]]:
    rc = logger_main(["--db", str(db), *args])
    return rc, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_events_a_full_outbox_dropped_are_listed_as_gaps(tmp_path, broker, capsys):
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gaps-probe")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    logger = LoggerProcess(tmp_path, broker.port)
    outbox = Outbox(tmp_path / "outbox.db", max_events=3)
    client = pump = None
    try:
        _until_subscribed(logger, lambda raw: pub.publish(TOPIC, raw, qos=1).wait_for_publish(30))  # unnumbered
        # the door offline: five decisions into an outbox that keeps three (the two oldest dropped)
        ids = _put(outbox, "u1", "u2", "u3", "u4", "u5")
        assert len(outbox) == 3 and outbox.dropped() == 2
        client = door_client(MqttSettings(port=broker.port, device_id="front"))
        pump = OutboxPump(outbox, client, retry_s=0.2).start()
        assert wait_until(lambda: set(ids[2:]) <= logger.event_ids(), 60)
        ids += _put(outbox, "u6")
        assert wait_until(lambda: ids[5] in logger.event_ids(), 60)
    finally:
        if pump is not None:
            pump.close(1.0)
        if client is not None:
            client.stop()
        assert logger.stop() == 0
        pub.loop_stop()
        pub.disconnect()
    stream = outbox.stream
    outbox.close()
    rc, gaps = _cli(logger.db, "gaps", capsys=capsys)
    assert rc == 1  # a monitoring script can alarm on it
    assert gaps == [{"device_id": "front", "event_stream": stream, "first": 1, "last": 2, "missing": 2,
                     "after": None, "before": gaps[0]["before"]}]
    assert gaps[0]["before"]["event_id"] == ids[2] and gaps[0]["before"]["event_seq"] == 3
    rc, streams = _cli(logger.db, "streams", "--door", "front", capsys=capsys)
    assert rc == 0 and len(streams) == 1
    assert {k: streams[0][k] for k in ("first", "last", "received", "missing")} == \
        {"first": 3, "last": 6, "received": 4, "missing": 2}
    audit = AuditLog(logger.db)
    recorded = {row["event_id"]: row["event_seq"] for row in audit.query(device="front") if "event_seq" in row}
    assert recorded == {ids[2]: 3, ids[3]: 4, ids[4]: 5, ids[5]: 6}
    audit.close()


def test_numbers_survive_a_restart_and_late_or_repeated_events_are_counted_once(tmp_path):
    """The outbox keeps its stream and goes on counting after a restart; the logger fills a gap
    when the missing event arrives late, ignores a redelivery, and counts a quarantined event of
    the door (one it cannot read) as received: it is in the quarantine, not lost."""
    first = Outbox(tmp_path / "outbox.db")
    _put(first, "u1", "u2")
    stream = first.stream
    first.close()
    again = Outbox(tmp_path / "outbox.db")
    _put(again, "u3", "u4", "u5")
    assert again.stream == stream
    events = again.peek(10)
    assert [json.loads(e.payload)["event_seq"] for e in events] == [1, 2, 3, 4, 5]
    assert {json.loads(e.payload)["event_stream"] for e in events} == {stream}
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    raw = [e.payload.encode() for e in events]
    for i in (0, 3, 4):
        intake.handle(TOPIC, raw[i])
    assert [(g["first"], g["last"]) for g in audit.gaps()] == [(2, 3)]
    intake.handle(TOPIC, raw[1])  # late
    intake.handle(TOPIC, raw[1])  # and redelivered
    assert [(g["first"], g["last"], g["missing"]) for g in audit.gaps()] == [(3, 3, 1)]
    assert audit.gaps()[0]["after"]["event_seq"] == 2 and audit.gaps()[0]["before"]["event_seq"] == 4
    unreadable = json.loads(raw[2])
    unreadable["similarity"] = "high"  # a door's event this logger cannot read: quarantined
    intake.handle(TOPIC, json.dumps(unreadable).encode())
    assert intake.quarantined == 1 and audit.gaps() == []
    (summary,) = audit.streams()
    assert summary["received"] == 5 and summary["missing"] == 0 and summary["last_event"]["event_seq"] == 5
    again.close()
    audit.close()


def test_an_outbox_from_before_the_numbering_counts_from_one(tmp_path):
    """A door upgraded with events still in its outbox: those go out as they were (unnumbered,
    still accepted), the first new one is number 1 — not the file's internal row number, which
    would read as thousands of lost events."""
    path = tmp_path / "outbox.db"
    conn = sqlite3.connect(path)
    conn.executescript("""CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL);
        CREATE TABLE stats(key TEXT PRIMARY KEY, value INTEGER);""")
    old = _decision("before")
    conn.execute("INSERT INTO events(seq, event_id, topic, payload, created_at) VALUES (4000, ?, ?, ?, 0)",
                 (old["event_id"], TOPIC, json.dumps(old)))
    conn.commit()
    conn.close()
    outbox = Outbox(path)
    _put(outbox, "after")
    first, second = (json.loads(e.payload) for e in outbox.peek(10))
    assert "event_seq" not in first and second["event_seq"] == 1
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    for e in outbox.peek(10):
        intake.handle(e.topic, e.payload.encode())
    assert intake.recorded == 2 and audit.gaps() == []
    outbox.close()
    audit.close()


def test_events_an_older_logger_quarantined_are_recorded_by_requeue(tmp_path, capsys):
    """Doors upgraded before the logger: the older logger quarantines their numbered events
    (unknown fields). After upgrading it, ``facelink-logger requeue`` records every one it now
    reads and leaves the rest (here: a message that is no decision) in the quarantine."""
    outbox = Outbox(tmp_path / "outbox.db")
    _put(outbox, "u1", "u2")
    audit = AuditLog(tmp_path / "audit.db")
    denied = Decision(DENIED_UNKNOWN, "front", "staff", "m/1", 99.0).payload()
    for e in outbox.peek(10):  # what an older logger does with them
        audit.quarantine(e.topic, e.payload.encode(), "schema: event_stream: Extra inputs are not permitted")
    audit.quarantine(TOPIC, b"not json", "not JSON")
    audit.quarantine(TOPIC, json.dumps(denied).encode(), "schema: an older logger's reason")
    audit.close()
    rc, out = _cli(tmp_path / "audit.db", "requeue", capsys=capsys)
    assert rc == 0 and out == [{"recorded": 3, "left_in_quarantine": 1}]
    audit = AuditLog(tmp_path / "audit.db")
    assert sorted(row["user_id"] or "-" for row in audit.query()) == ["-", "u1", "u2"]
    assert [q.raw for q in audit.quarantined()] == [b"not json"]
    assert audit.gaps() == [] and audit.streams()[0]["last_event"]["kind"] == "decisions"
    audit.close()
    outbox.close()


def test_an_event_seq_past_sqlite_integer_is_quarantined_not_lost(tmp_path):
    """A number SQLite cannot store (found in review: past 2**63 - 1 the insert raised
    OverflowError out of ``Intake.handle``, so a valid-looking decision, or garbage naming such a
    number, was acknowledged and neither recorded nor quarantined: gone from the log)."""
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    forged = {**_decision("u1"), "event_stream": "a" * 32, "event_seq": 2**64}
    intake.handle(TOPIC, json.dumps(forged).encode())  # never raises
    intake.handle(TOPIC, json.dumps({"event_stream": "b" * 32, "event_seq": 2**63}).encode())
    assert intake.recorded == 0 and intake.quarantined == 2
    assert [json.loads(q.raw)["event_seq"] for q in audit.quarantined()] == [2**64, 2**63]
    assert audit.gaps() == [] and audit.streams() == []
    largest = {**_decision("u2"), "event_stream": "c" * 32, "event_seq": 2**63 - 1}
    intake.handle(TOPIC, json.dumps(largest).encode())  # the largest storable number is still a number
    assert intake.recorded == 1 and audit.streams()[0]["last"] == 2**63 - 1
    audit.close()


def test_requeue_keeps_when_the_logger_first_received_the_event(tmp_path, capsys):
    """An event recorded by ``requeue`` keeps as ``received_at`` the time its bytes arrived (the
    quarantine's), not the requeue's (found in review: days later, that bound on when the door made
    it, the check on events of a door with an unsynchronized clock, was lost)."""
    outbox = Outbox(tmp_path / "outbox.db")
    (event_id,) = _put(outbox, "u1")
    audit = AuditLog(tmp_path / "audit.db")
    (e,) = outbox.peek(1)
    audit.quarantine(e.topic, e.payload.encode(), "schema: event_stream: Extra inputs are not permitted")
    audit.close()
    with sqlite3.connect(tmp_path / "audit.db") as conn:  # an older logger quarantined it at that time
        conn.execute("UPDATE quarantine SET received_at = '2026-12-01T08:00:00+00:00'")
    conn.close()
    rc, out = _cli(tmp_path / "audit.db", "requeue", capsys=capsys)
    assert rc == 0 and out == [{"recorded": 1, "left_in_quarantine": 0}]
    audit = AuditLog(tmp_path / "audit.db")
    (row,) = audit.query()
    assert row["event_id"] == event_id and row["received_at"] == "2026-12-01T08:00:00+00:00"
    audit.close()
    outbox.close()


def test_a_flood_of_numbered_garbage_is_not_a_warning_each(tmp_path, caplog):
    """Garbage naming outbox numbers is quarantined and logged by the intake at most every
    LOG_EVERY_S; found in review: each one that skipped numbers was also a WARNING of its own
    ("events … not received (yet)"), a log flood from anyone who can publish on a door's topic.
    A door's readable event that skips numbers is still said."""
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    with caplog.at_level("WARNING", logger="facelink.audit.store"):
        for n in range(50):
            intake.handle(TOPIC, json.dumps({"event_stream": "d" * 32, "event_seq": 2 * n + 2}).encode())
        assert intake.quarantined == 50
        assert [r for r in caplog.records if r.name == "facelink.audit.store"] == []
        event = {**_decision("u1"), "event_stream": "e" * 32, "event_seq": 3}
        intake.handle(TOPIC, json.dumps(event).encode())
    (said,) = [r.getMessage() for r in caplog.records if r.name == "facelink.audit.store"]
    assert "events 1 to 2" in said
    assert [(g["first"], g["last"]) for g in audit.gaps(device="front")][-1] == (1, 2)
    audit.close()


def test_an_outbox_restored_from_a_copy_is_seen_giving_numbers_twice(tmp_path, capsys):
    """Found in review: a door's outbox file restored from a copy (an SD card image, a backup)
    numbers again from the copy's last number, and the logger kept the first event of each number
    silently — the events the door recorded after that copy and lost with it went unseen. Each
    number given to a second event is kept (``sequence_reused``), said in ``streams`` and makes
    ``gaps`` exit 1."""
    import shutil

    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    _put(outbox, "u1", "u2")
    outbox.close()
    shutil.copy(path, tmp_path / "copy.db")
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    outbox = Outbox(path)
    _put(outbox, "u3")  # number 3, then the file is lost
    for e in outbox.peek(10):
        intake.handle(e.topic, e.payload.encode())
    outbox.close()
    shutil.copy(tmp_path / "copy.db", path)  # restored: u1 and u2 still in it (never sent)
    outbox = Outbox(path)
    _put(outbox, "u4")  # number 3 again
    for e in outbox.peek(10):
        intake.handle(e.topic, e.payload.encode())
    outbox.close()
    assert intake.recorded == 4 and audit.gaps() == []
    (stream,) = audit.streams()
    assert stream["reused"] == 1 and stream["last"] == 3
    audit.close()
    rc = logger_main(["--db", str(tmp_path / "audit.db"), "gaps"])
    said = capsys.readouterr()
    # found in review 88: exit 1 with nothing printed; it says why, on stderr (stdout: gaps only)
    assert rc == 1 and said.out == "" and "given to two events" in said.err and stream["event_stream"] in said.err


def test_a_log_started_after_the_doors_can_leave_out_what_came_before(tmp_path, capsys):
    """A logger installed (or its database started afresh) after the doors had been running: the
    numbers before each stream's first received one are a gap that never closes; ``--after-first``
    leaves those out and still lists a gap after the first."""
    outbox = Outbox(tmp_path / "outbox.db")
    _put(outbox, "u1", "u2", "u3", "u4", "u5")
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    for i, e in enumerate(outbox.peek(10)):
        if i in (2, 4):  # the log began at number 3; number 4 was lost
            intake.handle(e.topic, e.payload.encode())
    outbox.close()
    audit.close()
    rc, gaps = _cli(tmp_path / "audit.db", "gaps", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"]) for g in gaps] == [(1, 2), (4, 4)]
    rc, gaps = _cli(tmp_path / "audit.db", "gaps", "--after-first", "--door", "front", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"]) for g in gaps] == [(4, 4)]


def test_requeue_reads_the_quarantine_page_by_page(tmp_path, monkeypatch):
    """Found in review: requeue read the whole quarantine (up to 64 KiB a message) at once."""
    from facelink.audit import intake as intake_mod

    monkeypatch.setattr(intake_mod, "REQUEUE_PAGE", 2)
    outbox = Outbox(tmp_path / "outbox.db")
    _put(outbox, "u1", "u2", "u3", "u4", "u5")
    audit = AuditLog(tmp_path / "audit.db")
    for e in outbox.peek(10):
        audit.quarantine(e.topic, e.payload.encode(), "schema: an older logger's reason")
    pages: list[int] = []
    page = audit.quarantined

    def counted(*args, **kw):
        pages.append(kw.get("limit"))
        return page(*args, **kw)

    monkeypatch.setattr(audit, "quarantined", counted)
    assert intake_mod.requeue(audit) == (5, 0)
    assert pages and set(pages) == {2}
    assert len(audit.query()) == 5 and audit.gaps() == []
    outbox.close()
    audit.close()
