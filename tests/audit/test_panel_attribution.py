"""A panel's verdict or opening is shown only under a decision of its own door: the broker ACL lets
each door write only ``<prefix>/<door>/#``, and the intake checks that a record's ``device_id`` is
its topic's door, but ``decision_event_id`` / ``likely_for`` are just ids the door wrote. One door
(or anything holding its broker account) must not be able to hang a verdict or an opening on
another door's GRANTED in ``facelink-logger query``."""

from __future__ import annotations

import json

from facelink.audit.intake import Intake
from facelink.audit.logger import main
from facelink.audit.store import AuditLog
from facelink.device.decision import GRANTED, Decision


def _granted(device: str, event_id: str) -> dict:
    return {**Decision(GRANTED, device, "staff", "m/1", 99.0, user_id="ann", similarity=99.7).payload(),
            "event_id": event_id, "timestamp": "2026-01-01T08:00:00+00:00"}


def _verdict(device: str, event_id: str, for_: str, verdict: str) -> dict:
    return {"schema": "facelink.panel/1", "event_id": event_id, "timestamp": "2026-01-01T08:00:01+00:00",
            "device_id": device, "decision_event_id": for_, "credential": "H10301:42:31337",
            "verdict": verdict, "command": None, "latency_s": 0.4}


def _opening(device: str, event_id: str, likely_for: str) -> dict:
    return {"schema": "facelink.panel-output/1", "event_id": event_id, "timestamp": "2026-01-01T08:00:02+00:00",
            "device_id": device, "command": {"output_no": 0, "control_code": 5, "timer_count": 30},
            "likely_for": likely_for, "relay": "opening", "refers_to": None, "reason": None}


def test_a_door_cannot_hang_its_panel_records_on_another_doors_decision(tmp_path, capsys):
    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    intake.handle("facelink/front/decision", json.dumps(_granted("front", "d-1")).encode())
    intake.handle("facelink/front/panel", json.dumps(_verdict("front", "p-1", "d-1", "GRANTED")).encode())
    intake.handle("facelink/front/panel", json.dumps(_opening("front", "o-1", "d-1")).encode())
    # door "back", on its own topics (its device_id is its topic's door: the intake takes them),
    # names front's decision
    intake.handle("facelink/back/panel", json.dumps(_verdict("back", "p-2", "d-1", "DENIED")).encode())
    intake.handle("facelink/back/panel", json.dumps(_opening("back", "o-2", "d-1")).encode())
    [row] = log.query(device="front")
    assert row["device_id"] == "front"
    assert [(p["event_id"], p["device_id"]) for p in row["panel"]] == [("p-1", "front")]
    assert [(o["event_id"], o["device_id"]) for o in row["openings"]] == [("o-1", "front")]
    # back's own listing still has its opening (it is recorded, only not under front's decision)
    assert [o["event_id"] for o in log.panel_outputs(device="back")] == ["o-2"]
    log.close()
    assert main(["--db", str(tmp_path / "a.db"), "query", "--door", "front"]) == 0
    [printed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {p["device_id"] for p in printed["panel"] + printed["openings"]} == {"front"}
