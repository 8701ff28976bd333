"""``facelink-logger query/alarms/openings --since/--until`` take an ISO-8601 timestamp with a time
zone (and a bare date, in UTC), and every event's ``timestamp`` may carry any zone the schema takes
(``Z``, ``+01:00``): a bound and an event are compared as instants, not as strings. They were
compared as strings: ``--since 2026-11-01T09:00:00+01:00`` (08:00 UTC) left out a decision the
door made at 08:30 UTC, and an event stamped ``+01:00`` was sorted and filtered by its local time."""

from __future__ import annotations

import json

from facelink.audit.intake import Intake
from facelink.audit.logger import main
from facelink.audit.store import AuditLog
from facelink.device.decision import GRANTED, Decision


def _granted(event_id: str, timestamp: str) -> dict:
    return {**Decision(GRANTED, "front", "staff", "m/1", 99.0, user_id="ann", similarity=99.7).payload(),
            "event_id": event_id, "timestamp": timestamp}


def test_since_and_until_are_instants(tmp_path, capsys):
    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    for event_id, ts in (("early", "2026-11-01T07:30:00.250000+00:00"),   # as the door writes them
                         ("local", "2026-11-01T09:10:00+01:00"),          # 08:10 UTC, a zone the schema takes
                         ("door", "2026-11-01T08:30:00.500000+00:00"),
                         ("zulu", "2026-11-01T08:50:00Z")):
        intake.handle("facelink/front/decision", json.dumps(_granted(event_id, ts)).encode())
    assert intake.recorded == 4
    assert [r["event_id"] for r in log.query()] == ["early", "local", "door", "zulu"]  # in time order
    assert [r["event_id"] for r in log.query(since="2026-11-01T09:00:00+01:00")] == ["local", "door", "zulu"]
    assert [r["event_id"] for r in log.query(since="2026-11-01T08:30:00Z")] == ["door", "zulu"]
    assert [r["event_id"] for r in log.query(until="2026-11-01T08:40:00Z")] == ["early", "local", "door"]
    assert [r["event_id"] for r in log.query(since="2026-11-01")] == ["early", "local", "door", "zulu"]
    assert log.query()[1]["timestamp"] == "2026-11-01T09:10:00+01:00"  # the record as published
    log.close()
    assert main(["--db", str(tmp_path / "a.db"), "query", "--since", "2026-11-01T09:00:00+01:00"]) == 0
    assert [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()] == ["local", "door", "zulu"]


def test_alarms_since_is_an_instant(tmp_path):
    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    alarm = {"schema": "facelink.alarm/1", "event_id": "a-1", "timestamp": "2026-11-01T08:30:00.5+00:00",
             "device_id": "front", "collection_id": "staff", "reason": "BAD_SIGNATURE", "detail": "x",
             "topic": "facelink/collections/staff/changes", "seq": None, "size": 812}
    intake.handle("facelink/front/alarm", json.dumps(alarm).encode())
    assert [a["event_id"] for a in log.alarms(since="2026-11-01T09:00:00+01:00")] == ["a-1"]
    assert log.alarms(since="2026-11-01T09:31:00+01:00") == []
    log.close()
