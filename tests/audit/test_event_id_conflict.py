"""A redelivery (the same event, byte for byte after validation) is stored once and is no news; a
second message that reuses a recorded event_id with other content is not a redelivery: it is
quarantined saying so, so that the security staff see it (a forgery, or a door reusing ids). It
used to be dropped without a trace, as if it had been a redelivery."""

from __future__ import annotations

import json

from facelink.audit.intake import Intake
from facelink.audit.store import AuditLog
from facelink.device.decision import DENIED_UNKNOWN, GRANTED, Decision


def _decision(device: str, kind: str, user: str | None) -> dict:
    return {**Decision(kind, device, "staff", "m/1", 99.0, user_id=user, similarity=99.7 if user else 41.0).payload(),
            "event_id": "d-1", "timestamp": "2026-01-01T08:00:00+00:00"}


def _alarm(**kw) -> dict:
    return {"schema": "facelink.alarm/1", "event_id": "a-1", "timestamp": "2026-01-01T08:00:00+00:00",
            "device_id": "front", "collection_id": "staff", "reason": "BAD_SIGNATURE", "detail": "x",
            "topic": "facelink/collections/staff/changes", "seq": None, "size": 812, **kw}


def test_an_event_id_reused_with_other_content_is_quarantined(tmp_path):
    log = AuditLog(tmp_path / "a.db", tmp_path / "a.jsonl")
    intake = Intake(log)
    real = _decision("front", DENIED_UNKNOWN, None)
    intake.handle("facelink/front/decision", json.dumps(real).encode())
    intake.handle("facelink/front/decision", json.dumps(real).encode())  # QoS 1 redelivery: no news
    assert (intake.recorded, intake.quarantined) == (1, 0)
    forged = [("facelink/front/decision", _decision("front", GRANTED, "mallory")),  # same door, other content
              ("facelink/back/decision", _decision("back", GRANTED, "mallory"))]   # another door, same id
    for topic, payload in forged:
        intake.handle(topic, json.dumps(payload).encode())
    intake.handle("facelink/front/alarm", json.dumps(_alarm()).encode())
    intake.handle("facelink/front/alarm", json.dumps(_alarm()).encode())
    intake.handle("facelink/front/alarm", json.dumps(_alarm(reason="REPLAY")).encode())
    assert [r["decision"] for r in log.query()] == [DENIED_UNKNOWN]  # the first stays the record
    assert [a["reason"] for a in log.alarms()] == ["BAD_SIGNATURE"]
    quarantined = log.quarantined()
    assert [(q.topic, json.loads(q.raw)["event_id"]) for q in quarantined] == [
        ("facelink/front/decision", "d-1"), ("facelink/back/decision", "d-1"), ("facelink/front/alarm", "a-1")]
    assert all("already recorded with other content" in q.reason for q in quarantined), [q.reason for q in quarantined]
    assert (intake.recorded, intake.quarantined) == (2, 3)
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 1
    log.close()
