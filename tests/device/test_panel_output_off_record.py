"""The access panel's output off (OSDP control 1 or 6) ends the door relay's running pulse at once
and is recorded (``facelink.panel-output/1``, ``relay`` ended / not_ended) with what that pulse
was started for: a GRANTED or the panel's own opening. Found in review: an off was only logged,
and it ends the door's own GRANTED pulse too, so a site could not see why a granted person's door
locked again early. A record that cannot be written never keeps the door released. The real
daemon, outbox and GpioRelay (gpiozero's mock pins), and the real audit log fed what the outbox
holds."""

from __future__ import annotations

import json
import os

from facelink.access.osdp_verdicts import PanelOutput
from facelink.audit.intake import Intake
from facelink.audit.logger import main
from facelink.audit.store import AuditLog
from facelink.device.decision import GRANTED, Decision
from facelink.device.door import GpioRelay

from .test_osdp_door import _osdp_door

RELAY = 17
ON = {"output_no": 0, "control_code": 5, "timer_count": 600}


def _off(code: int) -> PanelOutput:
    return PanelOutput({"output_no": 0, "control_code": code, "timer_count": 0}, None, opens=False)


def _panel_records(daemon) -> list[dict]:
    """The panel-output records in the outbox (ann has no badge: her GRANTED's not_sent record is
    on the same topic)."""
    return [p for e in daemon.outbox.peek(100) if e.topic == "facelink/door-1/panel"
            and (p := json.loads(e.payload))["schema"] == "facelink.panel-output/1"]


def test_the_panels_output_off_is_recorded_with_the_pulse_it_ended(tmp_path, broker, make_settings, engine, gpio,
                                                                   capsys):
    pin = gpio.gpio(RELAY)
    daemon, panel, master, slave = _osdp_door(tmp_path, broker, make_settings, engine, GpioRelay(RELAY, 600.0))
    granted = Decision(GRANTED, "door-1", "door", engine.model_version, 99.0, user_id="ann", similarity=99.8)
    try:
        daemon.emit(granted)  # ann has no badge: the door's own relay opens the door (a 600 s pulse)
        assert pin.state == 1
        daemon._panel_output(_off(1))  # the panel locks the door now: the GRANTED's pulse ends
        assert pin.state == 0
        daemon._panel_output(PanelOutput(ON, granted.event_id))  # the panel opens the door for the grant
        assert pin.state == 1
        daemon._panel_output(_off(6))
        assert pin.state == 0
        daemon._panel_output(_off(1))  # nothing running: nothing ended, still recorded
        records = _panel_records(daemon)
        opening = records[1]["event_id"]
        assert [(r["relay"], r["command"]["control_code"], r["likely_for"], r["refers_to"]) for r in records] == [
            ("ended", 1, None, granted.event_id), ("opening", 5, granted.event_id, None),
            ("ended", 6, None, opening), ("not_ended", 1, None, None)]

        # a record that cannot be written still ends the pulse (locking is the fail-closed direction)
        daemon._panel_output(PanelOutput(ON, None))
        assert pin.state == 1

        def disk_full(*_args, **_kw):
            raise OSError(28, "No space left on device")
        depth = len(daemon.outbox)
        daemon.outbox.put = disk_full
        daemon._panel_output(_off(1))
        assert pin.state == 0 and daemon.relay.stuck is None
        del daemon.outbox.put
        assert len(daemon.outbox) == depth

        # the audit log keeps them: the GRANTED shows the offs that ended its pulse, its own and
        # its opening's; `facelink-logger openings` lists the offs beside the openings
        audit = AuditLog(tmp_path / "audit.db")
        intake = Intake(audit)
        for event in daemon.outbox.peek(100):
            intake.handle(event.topic, event.payload.encode())
        assert intake.quarantined == 0
        [row] = audit.query(user="ann")
        assert [(o["relay"], o["refers_to"]) for o in row["ended_by"]] == [("ended", granted.event_id),
                                                                          ("ended", opening)]
        assert [o["event_id"] for o in row["openings"]] == [opening]
        audit.close()
        assert main(["--db", str(tmp_path / "audit.db"), "openings", "--door", "door-1"]) == 0
        listed = [json.loads(line)["relay"] for line in capsys.readouterr().out.splitlines()]
        assert listed == ["ended", "opening", "ended", "not_ended", "opening"]
    finally:
        daemon.shutdown(flush_timeout_s=1)
        panel.close()
        os.close(master)
        os.close(slave)


def test_an_off_the_outbox_cannot_take_goes_to_the_broker_and_a_refused_publish_is_said(caplog):
    """A record the outbox cannot take is published directly; found in review: a publish the
    transport refused (not connected: it returns False, it does not raise) was taken as sent, so
    nothing said the record was lost."""
    import logging

    from facelink.device.door import EndedPulse
    from facelink.device.panel_records import PanelRecords

    class Full:
        def put(self, *_args):
            raise OSError(28, "No space left on device")

    class Relay:
        opens_door = True

        def end_pulse(self):
            return EndedPulse("g-1")

    class Transport:
        def __init__(self, ok: bool) -> None:
            self.ok, self.sent = ok, []

        def publish(self, topic, payload, **_kw):
            self.sent.append((topic, json.loads(payload)))
            return self.ok

    for ok in (True, False):
        transport = Transport(ok)
        records = PanelRecords(Full(), transport, "facelink/door-1/panel", "door-1", Relay())
        caplog.clear()
        with caplog.at_level(logging.CRITICAL):
            records.output(_off(1))
        assert [(t, p["relay"], p["refers_to"]) for t, p in transport.sent] == [("facelink/door-1/panel", "ended",
                                                                                  "g-1")]
        lost = [r for r in caplog.records if "cannot publish" in r.getMessage()]
        assert bool(lost) is (not ok)


def test_an_off_that_fails_is_recorded_with_the_pulses_it_did_not_end(tmp_path, broker, make_settings, engine,
                                                                       gpio):
    """The lock output's off fails when the panel locks the door (a GPIO write error): the record
    says ``off_failed`` with why, naming the GRANTED whose pulse still holds the lock released and
    the older pulse it overlapped; the audit log shows it under that GRANTED's ``ended_by`` only
    as what it is (not an end). Found in the tenth session: it was recorded ``not_ended`` — "no
    pulse of this door's ran" — while the door stood released for the grant."""
    pin = gpio.gpio(RELAY)
    daemon, panel, master, slave = _osdp_door(tmp_path, broker, make_settings, engine, GpioRelay(RELAY, 600.0))
    first = Decision(GRANTED, "door-1", "door", engine.model_version, 99.0, user_id="ann", similarity=99.8)
    second = Decision(GRANTED, "door-1", "door", engine.model_version, 99.0, user_id="bob", similarity=99.7)
    try:
        daemon.emit(first)
        daemon.emit(second)
        assert pin.state == 1
        pin.fail_writes = 10**6  # every off fails until the test lets it work
        daemon._panel_output(_off(1))
        assert pin.state == 1 and daemon.relay.stuck is not None
        (off,) = _panel_records(daemon)
        assert (off["relay"], off["refers_to"], off["earlier_pulses"]) == ("off_failed", second.event_id,
                                                                            [first.event_id])
        assert off["reason"] == daemon.relay.stuck and "could not be switched off" in off["reason"]
        pin.fail_writes = 0
        audit = AuditLog(tmp_path / "audit.db")
        intake = Intake(audit)
        for event in daemon.outbox.peek(100):
            intake.handle(event.topic, event.payload.encode())
        assert intake.quarantined == 0
        assert [o["relay"] for o in audit.panel_outputs(device="door-1")] == ["off_failed"]
        assert all("ended_by" not in row for row in audit.query(device="door-1"))  # nothing was ended
        audit.close()
    finally:
        daemon.shutdown(flush_timeout_s=1)
        panel.close()
        os.close(master)
        os.close(slave)
