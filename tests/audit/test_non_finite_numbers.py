"""The audit log's JSON is JSON: Python's json reads ``Infinity`` (not JSON), so a panel verdict
with ``"latency_s": Infinity`` passed the schema (ge=0) and was stored, mirrored to the JSONL file
and printed by ``facelink-logger run`` as ``Infinity``, which a strict JSON reader of the mirror
(jq, a SIEM) refuses. It is quarantined like any other number out of range."""

from __future__ import annotations

import json

from facelink.audit.intake import Intake
from facelink.audit.store import AuditLog


def test_a_non_finite_latency_is_quarantined(tmp_path):
    log = AuditLog(tmp_path / "a.db", tmp_path / "a.jsonl")
    intake = Intake(log)
    verdict = {"schema": "facelink.panel/1", "event_id": "p-1", "timestamp": "2026-01-01T08:00:01+00:00",
               "device_id": "front", "decision_event_id": "d-1", "credential": "H10301:42:31337",
               "verdict": "GRANTED", "command": None, "latency_s": 0.4}
    intake.handle("facelink/front/panel", json.dumps(verdict).encode())
    intake.handle("facelink/front/panel", json.dumps({**verdict, "event_id": "p-2", "latency_s": float("inf")}).encode())
    assert (intake.recorded, intake.quarantined) == (1, 1)
    for line in (tmp_path / "a.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # strict JSON
    [q] = log.quarantined()
    assert "latency_s" in q.reason
    log.close()
