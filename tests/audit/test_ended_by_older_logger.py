"""Found in review: ``ended_by`` depended on ``panel_output_ends``, which a logger fills for
the offs it stores itself and, once, for those a database already held (PRAGMA user_version). An
off stored after that by a logger that predates the table -- the running service during an
upgrade, after any new ``facelink-logger`` command (``query``, ``openings``) had opened the
database, or an older logger run on it later -- got no row there, and its GRANTED never showed
the off that cut its pulse short, on any later open either (the one-time fill had run). An off's
``refers_to`` is in ``panel_outputs`` itself: the query joins it from there, and the table adds
only what ``earlier_pulses`` names (which an older logger never stores: it quarantines them)."""

from __future__ import annotations

import json
import sqlite3

from facelink.audit.store import AuditLog
from facelink.device.decision import GRANTED, Decision


def _older_logger_stores(db, off: dict) -> None:
    """What a logger from before panel_output_ends does with a valid off: one row, no ends."""
    c = sqlite3.connect(db)
    c.execute("INSERT OR IGNORE INTO panel_outputs VALUES (?,?,?,?,?,?,?)",
              (off["event_id"], off["timestamp"], off["device_id"], off["likely_for"], off["relay"],
               off.get("refers_to"), json.dumps(off)))
    c.commit()
    c.close()


def _output(event_id: str, ts: str, relay: str, *, likely_for=None, refers_to=None, code=1) -> dict:
    return {"schema": "facelink.panel-output/1", "event_id": event_id, "timestamp": ts, "device_id": "front",
            "command": {"output_no": 0, "control_code": code, "timer_count": 0}, "likely_for": likely_for,
            "relay": relay, "refers_to": refers_to, "reason": None}


def test_an_off_an_older_logger_stored_after_the_upgrade_still_shows_under_its_granted(tmp_path):
    db = tmp_path / "a.db"
    log = AuditLog(db)  # the new logger (e.g. `facelink-logger query` right after the upgrade)
    for user, event_id in (("ann", "d-1"), ("bob", "d-2")):
        log.record({**Decision(GRANTED, "front", "staff", "m/1", 99.0, user_id=user, similarity=99.7).payload(),
                    "event_id": event_id, "timestamp": "2026-01-01T08:00:00+00:00"})
    log.close()
    # ... while the service still runs the older code: ann's own pulse ended; bob's opening's
    _older_logger_stores(db, _output("o-1", "2026-01-01T08:00:01+00:00", "ended", refers_to="d-1"))
    _older_logger_stores(db, _output("open-2", "2026-01-01T08:00:02+00:00", "opening", likely_for="d-2", code=5))
    _older_logger_stores(db, _output("o-2", "2026-01-01T08:00:03+00:00", "ended", refers_to="open-2"))
    log = AuditLog(db)  # the service restarted on the new code
    try:
        rows = {r["user_id"]: r for r in log.query()}
        assert [o["event_id"] for o in rows["ann"].get("ended_by", [])] == ["o-1"]
        assert [o["event_id"] for o in rows["bob"].get("ended_by", [])] == ["o-2"]
    finally:
        log.close()
