"""The audit logger deduplicates redelivered decisions and answers queries."""

from __future__ import annotations

from facelink.tools.logger import AuditLog


def test_dedup_and_query(tmp_path):
    log = AuditLog(tmp_path / "a.db", tmp_path / "a.jsonl")
    base = {"decision": "GRANTED", "device_id": "front", "user_id": "ann", "similarity": 99.7}
    assert log.record({**base, "event_id": "1", "timestamp": "2026-01-01T08:00:00+00:00"})
    assert not log.record({**base, "event_id": "1", "timestamp": "2026-01-01T08:00:00+00:00"})
    log.record({**base, "event_id": "2", "timestamp": "2026-01-02T08:00:00+00:00", "device_id": "back"})
    log.record({"event_id": "3", "timestamp": "2026-01-03T08:00:00+00:00", "decision": "DENIED_UNKNOWN",
                "device_id": "front", "user_id": None})
    assert [r["event_id"] for r in log.query(user="ann")] == ["1", "2"]
    assert [r["event_id"] for r in log.query(device="front")] == ["1", "3"]
    assert [r["event_id"] for r in log.query(since="2026-01-02")] == ["2", "3"]
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 3
    log.close()
