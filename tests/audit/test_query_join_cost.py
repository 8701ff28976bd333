"""Found in review: ``facelink-logger query`` joins a door's panel openings to its decisions by
``likely_for`` *and* ``device_id`` (review 47). panel_outputs had no index on ``likely_for``, so
SQLite looked each decision's openings up through ``panel_outputs_device``: every opening of that
door, once per decision of the query. At 1M decisions and 200k openings over 50 doors, ``query
--user`` went from 0.03 s to 4 s, and it grows as decisions x openings per door."""

from __future__ import annotations

import json
import sqlite3

from facelink.audit.store import AuditLog

DECISIONS, OPENINGS = 200, 20_000


def test_query_by_user_does_not_scan_every_opening_of_the_door_per_decision(tmp_path):
    log = AuditLog(tmp_path / "a.db")
    log.close()
    c = sqlite3.connect(tmp_path / "a.db")
    ts = "2026-01-01T08:00:00+00:00"
    c.executemany("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?)",
                  [(f"d-{i}", ts, "front", "GRANTED", "ann" if i < DECISIONS else "bob", None, 99.0,
                    json.dumps({"event_id": f"d-{i}"})) for i in range(DECISIONS + OPENINGS)])
    c.executemany("INSERT INTO panel_outputs VALUES (?,?,?,?,?,?,?)",  # bob's openings, all at door front
                  [(f"o-{i}", ts, "front", f"d-{DECISIONS + i}", "opening", None, json.dumps({"event_id": f"o-{i}"}))
                   for i in range(OPENINGS)] + [("o-ann", ts, "front", "d-0", "opening", None,
                                                  json.dumps({"event_id": "o-ann"}))])
    c.commit()
    c.close()
    log = AuditLog(tmp_path / "a.db")
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    log._conn.set_progress_handler(count, 1_000)  # one call per 1,000 SQLite VM instructions
    rows = log.query(user="ann")
    log._conn.set_progress_handler(None, 0)
    assert len(rows) == DECISIONS
    assert {r["event_id"]: [o["event_id"] for o in r.get("openings", [])] for r in rows}["d-0"] == ["o-ann"]
    # with an index on likely_for: a few thousand instructions per decision; without one: every
    # opening of door front for each of ann's 200 decisions (~4M rows)
    assert steps[0] < 2_000, f"{steps[0] * 1000:,} VM instructions for {DECISIONS} decisions"
