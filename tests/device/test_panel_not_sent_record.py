"""A door with a relay of its own and an access panel: a GRANTED whose credential was refused
before it was sent to the panel (the user has no credential; the same badge again within
osdp.debounce_s) opens the door all the same, and the panel's log then has no read for that
opening. Found in review: that was only a log line, so the audit trail showed a GRANTED and a
door opening with no trace that the panel was never told. Now it is a ``facelink.panel/1``
record beside the GRANTED (NO_RESPONSE, ``reason`` = ``not_sent``, ``detail`` = why), which
``facelink-logger query`` shows under the decision's ``panel``. The real daemon, GpioRelay on
gpiozero's mock pins, a libosdp panel on a pty, a real mosquitto and the real audit log fed what
the broker delivered."""

from __future__ import annotations

import json

import pytest

from facelink.audit.logger import main
from facelink.device.door import GpioRelay
from facelink.mqtt.schema import PanelVerdictMessage
from tests.waiting import wait_until

from .test_osdp_door import audited, granted, watched_osdp_door, with_badges

RELAY = 17


def test_a_granted_the_panel_is_not_sent_is_recorded_where_the_doors_relay_opens(tmp_path, broker, make_settings,
                                                                                 engine, gpio, capsys):
    pin = gpio.gpio(RELAY)
    with watched_osdp_door(tmp_path, broker, make_settings, engine, GpioRelay(RELAY, 600.0), debounce_s=600.0,
                           client_id="not-sent-watcher") as (daemon, panel, watcher):
        with_badges(daemon, engine, {"nobadge": None, "ann": "H10301:42:7"})
        sent, no_badge, again = granted(engine, "ann"), granted(engine, "nobadge"), granted(engine, "ann")
        for decision in (sent, no_badge, again):
            daemon.emit(decision)
            assert pin.state == 1  # the door's own relay opens the door for each
        assert panel.next_event(timeout=30) is not None  # the first one reached the panel
        # the door's records are all in the outbox once emit returned: wait until it is drained
        assert wait_until(lambda: len(daemon.outbox) == 0, 60)
        assert watcher.barrier(daemon.transport.publish)  # ... and everything reached the watcher
        decisions = watcher.payloads("door-1/decision")
        assert [(d["decision"], d["user_id"]) for d in decisions] == [("GRANTED", "ann"), ("GRANTED", "nobadge"),
                                                                      ("GRANTED", "ann")]  # no ACTUATION_FAILED
        not_sent = [p for p in watcher.payloads("door-1/panel") if p.get("reason") == "not_sent"]
        assert [(p["decision_event_id"], p["credential"], p["verdict"]) for p in not_sent] == [
            (no_badge.event_id, None, "NO_RESPONSE"), (again.event_id, "H10301:42:7", "NO_RESPONSE")]
        assert "no credential" in not_sent[0]["detail"]
        assert "osdp.debounce_s (600 s)" in not_sent[1]["detail"]
        for record in not_sent:
            assert PanelVerdictMessage.model_validate(record).payload() == record  # what the logger accepts
        assert panel.next_event(timeout=1) is None  # one card read in all

        # the audit log keeps them with their GRANTED, from what the broker delivered
        audit, intake = audited(tmp_path / "audit.db", watcher)
        assert intake.quarantined == 0
        rows = {r["event_id"]: r for r in audit.query(device="door-1")}
        assert [(p["reason"], p["credential"]) for p in rows[no_badge.event_id]["panel"]] == [("not_sent", None)]
        assert [(p["reason"], p["credential"]) for p in rows[again.event_id]["panel"]] == [
            ("not_sent", "H10301:42:7")]
        audit.close()
        assert main(["--db", str(tmp_path / "audit.db"), "query", "--user", "nobadge"]) == 0
        [printed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(p["verdict"], p["reason"]) for p in printed["panel"]] == [("NO_RESPONSE", "not_sent")]


def test_a_not_sent_record_needs_its_detail_and_only_it_may_lack_a_credential():
    base = {"schema": "facelink.panel/1", "event_id": "p-1", "timestamp": "2026-01-01T08:00:01+00:00",
            "device_id": "front", "decision_event_id": "d-1", "credential": None, "verdict": "NO_RESPONSE",
            "command": None, "latency_s": None}
    assert PanelVerdictMessage.model_validate({**base, "reason": "not_sent", "detail": "no credential"})
    for wrong in ({"reason": "not_sent"}, {"reason": "no_answer"}, {},
                  {"reason": "send_failed", "detail": "broke"}):
        with pytest.raises(ValueError):
            PanelVerdictMessage.model_validate({**base, **wrong})
