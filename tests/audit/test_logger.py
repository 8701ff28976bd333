"""The audit log: deduplication, queries, quarantine; the schema the door and the logger share."""

from __future__ import annotations

import json

import pytest

from facelink.audit.intake import Intake, Rejected, parse
from facelink.audit.store import AuditLog
from facelink.device.decision import DENIED_UNKNOWN, GRANTED, Decision


def decision(**kw) -> dict:
    d = Decision(kw.pop("decision", GRANTED), kw.pop("device_id", "front"), "staff", "m/1", 99.0,
                 user_id=kw.pop("user_id", "ann"), similarity=kw.pop("similarity", 99.7), **kw)
    return d.payload()


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


def test_door_payloads_pass_the_logger_schema():
    """One model: what the door publishes is exactly what the logger accepts."""
    for p in (decision(), decision(decision=DENIED_UNKNOWN, user_id=None, similarity=41.2),
              Decision("ERROR", "front", "staff", "m/1", 99.0, reason="StoreError: x").payload(),
              Decision("ACTUATION_FAILED", "front", "staff", "m/1", 99.0, user_id="ann",
                       refers_to="abc-1", reason="relay failed").payload()):
        assert parse("facelink/front/decision", json.dumps(p).encode()).payload() == p
    with pytest.raises(Exception, match="refers_to"):  # the door cannot build an invalid one either
        Decision("ACTUATION_FAILED", "front", "staff", "m/1", 99.0).payload()


@pytest.mark.parametrize("raw,reason", [
    (b"42", "not a JSON object: int"),
    (b"[1, 2]", "not a JSON object: list"),
    (b"\xff\xfe{}", "invalid UTF-8"),
    (b"{not json", "not JSON"),
    (b"{}", "schema: "),
    (b"x" * (65 * 1024), "payload too large"),
])
def test_rejects_non_decisions(raw, reason):
    with pytest.raises(Rejected, match=reason.replace("(", r"\(")):
        parse("facelink/front/decision", raw)


def test_rejects_wrong_types_missing_fields_and_lies():
    good = decision()
    cases = {
        "similarity": {**good, "similarity": "99.9"},         # wrong type
        "decision": {**good, "decision": "OPEN_SESAME"},      # not a decision kind
        "threshold": {k: v for k, v in good.items() if k != "threshold"},  # missing
        "extra": {**good, "extra": 1},                        # unknown field
        "GRANTED needs": {**good, "user_id": None},           # inconsistent
        "timestamp": {**good, "timestamp": "yesterday"},
        "user_id": {**good, "user_id": "ann'; DROP TABLE decisions;--"},  # contains a valid id
        "collection_id": {**good, "collection_id": "staff/../x"},
    }
    for reason, payload in cases.items():
        with pytest.raises(Rejected, match=reason):
            parse("facelink/front/decision", json.dumps(payload).encode())
    with pytest.raises(Rejected, match="not the door of topic"):  # a door speaking for another
        parse("facelink/back/decision", json.dumps(good).encode())


def test_timestamps_are_read_the_same_on_every_python():
    """One spelling (mqtt/schema.py parse_timestamp): 'Z' and fractions of 1-6 digits are taken,
    the basic format, a missing zone or seconds, an impossible date are refused, on Python 3.10
    (`make py310-check` runs this file there; its datetime.fromisoformat refused 'Z' and '.5')
    as on 3.11+ (whose fromisoformat alone takes the basic format too)."""
    good = decision()
    for ts in ("2026-01-01T08:00:00Z", "2026-01-01T08:00:00.5+00:00", "2026-01-01 08:00:00.123-05:30",
               "2026-01-01T08:00:00.123456+00:00"):
        assert parse("facelink/front/decision", json.dumps({**good, "timestamp": ts}).encode()).timestamp == ts
    for ts in ("20260101T080000Z", "2026-01-01T08:00:00", "2026-01-01T08:00Z", "2026-02-30T08:00:00Z",
               "2026-01-01T08:00:00+0000", "2026-01-01T08:00:00.1234567Z"):
        with pytest.raises(Rejected, match="timestamp"):
            parse("facelink/front/decision", json.dumps({**good, "timestamp": ts}).encode())


def test_intake_quarantines_and_carries_on(tmp_path):
    audit = AuditLog(tmp_path / "a.db")
    intake = Intake(audit)
    intake.handle("facelink/front/decision", b"42")
    ok = decision()
    intake.handle("facelink/front/decision", json.dumps(ok).encode())
    intake.handle("facelink/front/decision", json.dumps(ok).encode())  # redelivery: stored once
    assert [r["event_id"] for r in audit.query()] == [ok["event_id"]]
    (q,) = audit.quarantined()
    assert (q.topic, q.raw, q.size) == ("facelink/front/decision", b"42", 2)
    assert q.reason == "not a JSON object: int" and q.received_at
    assert (intake.recorded, intake.quarantined) == (1, 1)
    audit.close()


def _verdict(**kw) -> dict:
    v = {"schema": "facelink.panel/1", "event_id": "p-1", "timestamp": "2026-01-01T08:00:01+00:00",
         "device_id": "front", "decision_event_id": "d-1", "credential": "H10301:42:31337",
         "verdict": "GRANTED", "command": {"on_color": 2}, "latency_s": 0.4}
    v.update(kw)
    return v


def test_panel_verdicts_are_recorded_beside_their_decision(tmp_path):
    """Who got through the door: the panel's own answer is in the audit log with the decision."""
    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    granted = {**decision(), "event_id": "d-1", "timestamp": "2026-01-01T08:00:00+00:00"}
    intake.handle("facelink/front/decision", json.dumps(granted).encode())
    intake.handle("facelink/front/panel", json.dumps(_verdict()).encode())
    intake.handle("facelink/front/panel", json.dumps(_verdict()).encode())  # QoS 1 redelivery
    for bad in (_verdict(verdict="OPEN"), _verdict(device_id="back"), {**_verdict(), "extra": 1},
                granted):  # a decision is not a panel verdict
        intake.handle("facelink/front/panel", json.dumps(bad).encode())
    assert intake.recorded == 2 and intake.quarantined == 4
    [row] = log.query(user="ann")
    assert [p["verdict"] for p in row["panel"]] == ["GRANTED"]
    assert row["panel"][0]["decision_event_id"] == row["event_id"] == "d-1"
    assert "overlaps" not in row["panel"][0]
    # a verdict the panel may have meant for an earlier read says which one, and keeps saying it
    later = {**decision(), "event_id": "d-2", "timestamp": "2026-01-01T08:00:02+00:00"}
    intake.handle("facelink/front/decision", json.dumps(later).encode())
    intake.handle("facelink/front/panel", json.dumps(_verdict(event_id="p-2", decision_event_id="d-2",
                                                              overlaps="d-1")).encode())
    intake.handle("facelink/front/panel", json.dumps(_verdict(event_id="p-3", decision_event_id="d-2",
                                                              overlaps="not an event id!")).encode())
    assert intake.recorded == 4 and intake.quarantined == 5
    panel = {r["event_id"]: r.get("panel") for r in log.query(user="ann")}
    assert panel["d-2"] == [_verdict(event_id="p-2", decision_event_id="d-2", overlaps="d-1")]
    # a NO_RESPONSE says why (a door that predates the field says nothing); only a NO_RESPONSE does
    silent = {"verdict": "NO_RESPONSE", "command": None, "latency_s": None}
    third = {**decision(), "event_id": "d-3", "timestamp": "2026-01-01T08:00:09+00:00"}
    intake.handle("facelink/front/decision", json.dumps(third).encode())
    for event_id, extra in (("p-4", {"reason": "not_polled"}), ("p-5", {})):
        intake.handle("facelink/front/panel", json.dumps(_verdict(event_id=event_id, decision_event_id="d-3",
                                                                  **silent, **extra)).encode())
    for bad in (_verdict(event_id="p-6", decision_event_id="d-3", reason="no_answer"),  # on a GRANTED
                _verdict(event_id="p-7", decision_event_id="d-3", **silent, reason="asleep")):
        intake.handle("facelink/front/panel", json.dumps(bad).encode())
    assert intake.recorded == 7 and intake.quarantined == 7
    panel = {r["event_id"]: r.get("panel") for r in log.query(user="ann")}
    assert [(p["event_id"], p.get("reason")) for p in panel["d-3"]] == [("p-4", "not_polled"), ("p-5", None)]
    log.close()


def test_sync_alarms_are_kept_for_the_security_staff(tmp_path, capsys):
    """A door that refused a forged change set says so; the audit log keeps it, once."""
    from facelink.audit.logger import main

    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    alarm = {"schema": "facelink.alarm/1", "event_id": "a-1", "timestamp": "2026-01-01T08:00:00+00:00",
             "device_id": "front", "collection_id": "staff", "reason": "BAD_SIGNATURE",
             "detail": "the data or its signature was altered", "topic": "facelink/collections/staff/changes",
             "seq": None, "size": 812}
    intake.handle("facelink/front/alarm", json.dumps(alarm).encode())
    intake.handle("facelink/front/alarm", json.dumps(alarm).encode())  # redelivered
    intake.handle("facelink/front/alarm", json.dumps({**alarm, "reason": "bad reason; x"}).encode())
    intake.handle("facelink/back/alarm", json.dumps({**alarm, "event_id": "a-2"}).encode())  # not its door
    assert intake.recorded == 1 and intake.quarantined == 2
    assert [a["reason"] for a in log.alarms()] == ["BAD_SIGNATURE"]
    log.close()
    assert main(["--db", str(tmp_path / "a.db"), "alarms", "--door", "front"]) == 0
    assert json.loads(capsys.readouterr().out)["event_id"] == "a-1"


def _opening(**kw) -> dict:
    o = {"schema": "facelink.panel-output/1", "event_id": "o-1", "timestamp": "2026-01-01T08:00:02+00:00",
         "device_id": "front", "command": {"output_no": 0, "control_code": 5, "timer_count": 30},
         "likely_for": None, "relay": "opening", "refers_to": None, "reason": None}
    o.update(kw)
    return o


def test_every_opening_a_panel_commanded_is_kept(tmp_path, capsys):
    """Who got through the door when the panel opened it: each opening (with the read it most
    likely carries out, or none: the panel's own unlock) and a relay failure that refers to it
    are kept once; an inconsistent one, or a schema the panel topic does not carry, is quarantined."""
    from facelink.audit.logger import main

    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    failed = _opening(event_id="o-2", relay="failed", refers_to="o-1", reason="relay command exited 1")
    for good in (_opening(), _opening(), _opening(event_id="o-3", likely_for="d-1"), failed):
        intake.handle("facelink/front/panel", json.dumps(good).encode())
    for bad in (_opening(event_id="o-4", relay="failed"),  # no refers_to, no reason
                _opening(event_id="o-5", refers_to="o-1"),  # refers_to on an opening
                _opening(event_id="o-6", relay="opened"),
                {**_opening(event_id="o-7"), "schema": "facelink.panel-output/9"},
                _opening(event_id="o-8", device_id="back")):
        intake.handle("facelink/front/panel", json.dumps(bad).encode())
    assert intake.recorded == 3 and intake.quarantined == 5
    assert [(o["event_id"], o["relay"], o["likely_for"]) for o in log.panel_outputs()] == [
        ("o-1", "opening", None), ("o-3", "opening", "d-1"), ("o-2", "failed", None)]
    assert log.panel_outputs(device="back") == [] and log.query() == []  # not a decision, not a verdict
    log.close()
    assert main(["--db", str(tmp_path / "a.db"), "openings", "--door", "front", "--since",
                 "2026-01-01T08:00:02+00:00"]) == 0
    assert [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()] == ["o-1", "o-3", "o-2"]


def test_openings_are_mirrored_and_listed_since_a_time(tmp_path, capsys):
    """The JSONL mirror gets each new opening once; --since leaves the earlier ones out; a panel
    record whose schema is neither the verdict's nor the opening's (or not a string) is
    quarantined saying so."""
    from facelink.audit.logger import main

    log = AuditLog(tmp_path / "a.db", tmp_path / "a.jsonl")
    intake = Intake(log)
    early = _opening(event_id="o-0", timestamp="2026-01-01T07:00:00+00:00")
    for good in (early, _opening(), _opening()):
        intake.handle("facelink/front/panel", json.dumps(good).encode())
    for schema in ("facelink.panel-output/9", ["facelink.panel-output/1"], {"a": 1}):
        intake.handle("facelink/front/panel", json.dumps({**_opening(event_id="o-9"), "schema": schema}).encode())
    assert intake.recorded == 2 and intake.quarantined == 3
    assert [json.loads(line)["event_id"] for line in (tmp_path / "a.jsonl").read_text().splitlines()] == ["o-0", "o-1"]
    reasons = [q.reason for q in log.quarantined()]
    assert all("is not one the panel topic carries" in r for r in reasons), reasons
    log.close()
    assert main(["--db", str(tmp_path / "a.db"), "openings", "--since", "2026-01-01T08:00:00+00:00"]) == 0
    assert [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()] == ["o-1"]


def test_a_granted_decision_shows_the_openings_that_carried_it_out(tmp_path):
    """Who got through the door: a GRANTED the door handed to the panel comes back from query with
    the panel's verdict and the opening the panel then commanded for it (``likely_for``); the
    panel's own unlock (likely for nothing) is listed by ``openings`` only."""
    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    granted = {**decision(), "event_id": "d-1", "timestamp": "2026-01-01T08:00:00+00:00"}
    intake.handle("facelink/front/decision", json.dumps(granted).encode())
    intake.handle("facelink/front/panel", json.dumps(_verdict()).encode())
    for opening in (_opening(event_id="o-1", likely_for="d-1"), _opening(event_id="o-2")):
        intake.handle("facelink/front/panel", json.dumps(opening).encode())
    [row] = log.query(user="ann")
    assert [p["event_id"] for p in row["panel"]] == ["p-1"]
    assert [o["event_id"] for o in row["openings"]] == ["o-1"]
    assert [o["event_id"] for o in log.panel_outputs()] == ["o-1", "o-2"]
    log.close()


def test_the_panels_output_offs_are_kept_and_shown_with_the_grant_whose_pulse_they_ended(tmp_path):
    """An off (relay ended / not_ended) is kept; ``query`` shows a GRANTED the offs that ended its
    own pulse or that of an opening the panel commanded for it (``ended_by``), only of its door.
    An off that names a read (likely_for), a reason, or refers_to without ending anything is
    quarantined."""
    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    granted = {**decision(), "event_id": "d-1", "timestamp": "2026-01-01T08:00:00+00:00"}
    intake.handle("facelink/front/decision", json.dumps(granted).encode())
    off = {"command": {"output_no": 0, "control_code": 1, "timer_count": 0}}
    for good in (_opening(event_id="o-1", likely_for="d-1"),
                 _opening(event_id="x-1", relay="ended", refers_to="d-1", **off),
                 _opening(event_id="x-2", relay="ended", refers_to="o-1", **off),
                 _opening(event_id="x-3", relay="ended", **off),  # the door did not know what for
                 _opening(event_id="x-4", relay="not_ended", **off)):
        intake.handle("facelink/front/panel", json.dumps(good).encode())
    intake.handle("facelink/back/panel", json.dumps(_opening(event_id="x-5", device_id="back", relay="ended",
                                                             refers_to="d-1", **off)).encode())
    for bad in (_opening(event_id="x-6", relay="ended", likely_for="d-1", **off),
                _opening(event_id="x-7", relay="ended", refers_to="d-1", reason="why", **off),
                _opening(event_id="x-8", relay="not_ended", refers_to="d-1", **off)):
        intake.handle("facelink/front/panel", json.dumps(bad).encode())
    assert intake.recorded == 7 and intake.quarantined == 3
    [row] = log.query(user="ann")
    assert [o["event_id"] for o in row["ended_by"]] == ["x-1", "x-2"]
    assert [o["event_id"] for o in row["openings"]] == ["o-1"]
    assert [o["relay"] for o in log.panel_outputs(device="front")] == ["opening", "ended", "ended", "ended",
                                                                       "not_ended"]
    log.close()


def test_a_credential_that_broke_on_its_way_to_the_panel_is_kept_with_its_grant(tmp_path):
    """A GRANTED the door's relay carried out whose credential broke on the wire: a NO_RESPONSE
    ``send_failed`` with ``detail`` (what the panel may have read instead) is kept under the
    decision's ``panel``; detail goes with send_failed only, and send_failed with NO_RESPONSE only."""
    log = AuditLog(tmp_path / "a.db")
    intake = Intake(log)
    granted = {**decision(), "event_id": "d-1", "timestamp": "2026-01-01T08:00:00+00:00"}
    intake.handle("facelink/front/decision", json.dumps(granted).encode())
    broke = {"verdict": "NO_RESPONSE", "command": None, "latency_s": None, "reason": "send_failed",
             "detail": "Wiegand output failed after 26 of 34 bits; the panel may have read H10301:253:43494 instead"}
    intake.handle("facelink/front/panel", json.dumps(_verdict(**broke)).encode())
    for bad in ({**broke, "detail": None}, {**broke, "reason": "no_answer"}, {**broke, "verdict": "GRANTED"},
                {**broke, "reason": None}):
        intake.handle("facelink/front/panel", json.dumps(_verdict(event_id="p-9", **bad)).encode())
    assert intake.recorded == 2 and intake.quarantined == 4
    [row] = log.query(user="ann")
    assert [(p["reason"], p["detail"]) for p in row["panel"]] == [("send_failed", broke["detail"])]
    log.close()
