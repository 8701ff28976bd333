"""The logger's own clock beside the door's: each decision (and opening, alarm) it stores carries
``received_at``, when it first stored it. A door on fake-hwclock after a power cut stamps its
decisions days back (``clock_synchronized`` false); the logger's time bounds when it really
happened (no later), and a redelivery does not move it. Kept in a table of its own, so an older
logger writing the same database keeps working."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

from facelink.audit.intake import Intake
from facelink.audit.store import AuditLog
from facelink.device.decision import GRANTED, Decision

FAKE_HWCLOCK = "2026-11-30T06:00:00+00:00"  # the time a Pi saved at its last shutdown


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def test_a_decision_stamped_by_a_wrong_door_clock_carries_when_the_logger_got_it(tmp_path):
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    made = Decision(GRANTED, "front", "staff", "m/1", 99.0, user_id="ann", similarity=99.7,
                    timestamp=FAKE_HWCLOCK, clock_synchronized=False).payload()
    before = _now()
    intake.handle("facelink/front/decision", json.dumps(made).encode())
    after = _now()
    (row,) = audit.query(user="ann")
    assert row["timestamp"] == FAKE_HWCLOCK and row["clock_synchronized"] is False  # as the door said
    assert before <= row["received_at"] <= after  # the logger's clock: the door made it no later
    intake.handle("facelink/front/decision", json.dumps(made).encode())  # a QoS 1 redelivery
    assert audit.query(user="ann")[0]["received_at"] == row["received_at"]
    audit.close()


def test_openings_and_alarms_carry_it_too_and_an_older_loggers_rows_do_not(tmp_path):
    audit = AuditLog(tmp_path / "audit.db")
    opening = {"schema": "facelink.panel-output/1", "event_id": "o-1", "timestamp": FAKE_HWCLOCK,
               "device_id": "front", "command": {"control_code": 5}, "likely_for": None, "relay": "opened"}
    alarm = {"event_id": "a-1", "timestamp": FAKE_HWCLOCK, "device_id": "front", "collection_id": "staff",
             "reason": "BAD_SIGNATURE"}
    audit.record_panel_output(opening)
    audit.record_alarm(alarm)
    assert audit.panel_outputs()[0]["received_at"] >= FAKE_HWCLOCK
    assert audit.alarms()[0]["received_at"] >= FAKE_HWCLOCK
    audit.close()
    # an older logger on the same file inserts as it always did (its column count is unchanged)
    older = sqlite3.connect(tmp_path / "audit.db")
    older.execute("INSERT OR IGNORE INTO decisions VALUES (?,?,?,?,?,?,?,?)",
                  ("old-1", FAKE_HWCLOCK, "front", GRANTED, "bob", None, 99.5,
                   json.dumps({"event_id": "old-1", "timestamp": FAKE_HWCLOCK, "decision": GRANTED,
                               "user_id": "bob"})))
    older.commit()
    older.close()
    audit = AuditLog(tmp_path / "audit.db")
    (row,) = audit.query(user="bob")
    assert "received_at" not in row  # not known: never made up
    audit.close()
