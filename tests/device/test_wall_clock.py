"""Each event says when the door's wall clock — its ``timestamp`` — was not synchronized (the
kernel's adjtimex state), so that an auditor knows which times to doubt: a Pi has no battery
clock and after a power cut without network decides on fake-hwclock's old time. Decisions,
panel records and sync alarms alike (``mqtt.wall_clock.stamp``)."""

from __future__ import annotations

import json

import pytest

from facelink.audit.intake import Intake
from facelink.audit.store import AuditLog
from facelink.device.decision import Decision
from facelink.mqtt import wall_clock


def test_the_kernel_is_asked_and_answers():
    """On Linux the kernel answers (True or False, never None), and a second reading agrees."""
    first = wall_clock.synchronized()
    assert isinstance(first, bool)
    assert wall_clock.synchronized() is first


@pytest.mark.parametrize("synced", [False, True, None])
def test_only_an_unsynchronized_clock_is_published_and_the_logger_keeps_it(tmp_path, synced):
    granted = Decision("GRANTED", "front", "door", "m", 99.0, user_id="ann", similarity=99.5,
                       clock_synchronized=synced)
    payload = granted.payload()
    # false is said; true and unknown are left out, so a logger that predates the field still
    # accepts every decision of a synchronized door
    assert ("clock_synchronized" in payload) == (synced is False)
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    intake.handle("facelink/front/decision", json.dumps(payload).encode())
    (row,) = audit.query(user="ann")
    assert row.get("clock_synchronized", "absent") == (False if synced is False else "absent")
    assert (intake.recorded, intake.quarantined) == (1, 0)
    audit.close()


def test_every_decision_is_stamped_with_the_clock_state_of_its_making():
    made = Decision("ERROR", "front", "door", "m", 99.0, reason="x")
    assert made.clock_synchronized is wall_clock.synchronized()


def test_panel_records_are_stamped_the_same_way(tmp_path):
    """A panel verdict and a panel opening, made through the door's PanelRecords into a real
    outbox, carry ``clock_synchronized`` false exactly when the kernel says so; the logger's
    models accept every variant."""
    from facelink.access.osdp_verdicts import PanelOutput, PanelVerdict
    from facelink.device.door import NoRelay
    from facelink.device.panel_records import PanelRecords
    from facelink.mqtt.outbox import Outbox
    from facelink.mqtt.schema import PanelOutputMessage, PanelVerdictMessage

    outbox = Outbox(tmp_path / "outbox.db")
    records = PanelRecords(outbox, None, "facelink/front/panel", "front", NoRelay())
    records.verdict(PanelVerdict("d-1", "H10301:42:1", "GRANTED", {"on_color": 2}, 0.4))
    records.output(PanelOutput({"control_code": 5}, None))
    said = False if wall_clock.synchronized() is False else None
    payloads = [json.loads(event.payload) for event in outbox.peek(10)]
    assert len(payloads) == 2 and [p.get("clock_synchronized") for p in payloads] == [said, said]
    for model, payload in zip((PanelVerdictMessage, PanelOutputMessage), payloads):
        for synced in (False, True, None):
            message = model.model_validate({**payload, "clock_synchronized": synced})
            assert ("clock_synchronized" in message.payload()) == (synced is False)
    outbox.close()


@pytest.mark.parametrize("kernel_says", [False, True])
def test_panel_records_say_what_the_kernel_says_whatever_this_machine_s_clock(tmp_path, monkeypatch, kernel_says):
    """Found in review: the test above compares with this machine's own clock state, so on a
    synchronized machine (most CI) it passed with records that were never stamped at all. Here the
    kernel's answer is fixed: false is said on both records, true is left out."""
    from facelink.access.osdp_verdicts import PanelOutput, PanelVerdict
    from facelink.device.door import NoRelay
    from facelink.device.panel_records import PanelRecords
    from facelink.mqtt.outbox import Outbox

    monkeypatch.setattr(wall_clock, "synchronized", lambda: kernel_says)
    outbox = Outbox(tmp_path / "outbox.db")
    records = PanelRecords(outbox, None, "facelink/front/panel", "front", NoRelay())
    records.verdict(PanelVerdict("d-1", "H10301:42:1", "GRANTED", {"on_color": 2}, 0.4))
    records.output(PanelOutput({"control_code": 5}, None))
    payloads = [json.loads(event.payload) for event in outbox.peek(10)]
    assert [p.get("clock_synchronized", "absent") for p in payloads] == [False if kernel_says is False else "absent"] * 2
    outbox.close()
