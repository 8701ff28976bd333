"""Overlapping pulses of the door's relay, and the panel's output off that ends them. A second
pulse within ``pulse_s`` (a second GRANTED; the panel's opening for a GRANTED, the routine case
with a relay and a panel) keeps the lock released past the first one's own end; the panel's off
then locks the door before the end of every pulse still inside its own ``pulse_s``. Found in
review: the off's record (``facelink.panel-output/1``, relay ended) named only the newest pulse,
so a GRANTED whose pulse it also cut short showed no ``ended_by`` in ``facelink-logger query``
(unless the newest pulse was an opening the panel commanded for that very GRANTED). Now the
record names the older ones too (``earlier_pulses``), and the logger shows the off under each."""

from __future__ import annotations

import json

from facelink.audit.logger import main
from facelink.audit.store import AuditLog
from facelink.device.decision import GRANTED, Decision
from facelink.device.door import EndedPulse, GpioRelay, PulseSwitch
from facelink.mqtt.schema import PanelOutputMessage
from tests.waiting import wait_until

from .test_osdp_door import _openings, audited, granted, watched_osdp_door, with_badges
from .test_relay import Output

RELAY = 17


def test_an_end_names_every_pulse_still_inside_its_own_time():
    """A pulse whose own pulse_s had passed when the off came ran its whole time (a newer one kept
    the lock released after it): it is not named; the ones still inside it are, oldest first."""
    now = [100.0]
    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=10.0, clock=lambda: now[0])
    try:
        switch.pulse("granted-1")  # until 110
        now[0] = 104.0
        switch.pulse("opening-2")  # until 114
        now[0] = 108.0
        switch.pulse("granted-3")  # until 118
        assert switch.running() == EndedPulse("granted-3", earlier=("granted-1", "opening-2"))
        now[0] = 111.0  # granted-1 ran its whole 10 s
        assert switch.end() == EndedPulse("granted-3", earlier=("opening-2",)) and not out.released
        assert switch.end() is None and switch.running() is None
        switch.pulse("granted-4")  # a new period: nothing before the off is named again
        assert switch.end() == EndedPulse("granted-4")
    finally:
        switch.close()


def test_the_panels_off_is_recorded_under_every_grant_whose_pulse_it_ended(tmp_path, broker, make_settings, engine,
                                                                           gpio, capsys):
    """Ann is GRANTED (her badge goes to the panel, which opens the door for it), then Bob within
    pulse_s; the panel's output off locks the door: the record names Bob's pulse (the newest) and
    Ann's and her opening's (earlier_pulses), and the audit log shows it under both GRANTEDs."""
    pin = gpio.gpio(RELAY)
    with watched_osdp_door(tmp_path, broker, make_settings, engine, GpioRelay(RELAY, 600.0), verdict_timeout_s=30.0,
                           client_id="overlap-watcher") as (daemon, panel, watcher):
        with_badges(daemon, engine, {"ann": "H10301:42:7", "bob": "H10301:42:8"})
        ann, bob = granted(engine, "ann"), granted(engine, "bob")
        daemon.emit(ann)  # the door's own pulse for Ann
        assert pin.state == 1
        assert panel.next_event(timeout=30) is not None  # the panel polled Ann's read
        assert panel.output(5)  # ... and opens the door for it: a second pulse
        assert watcher.wait_for(lambda: len(_openings(watcher)) == 1, 30)
        [opening] = _openings(watcher)
        assert opening["likely_for"] == ann.event_id
        daemon.emit(bob)  # Bob within pulse_s: the newest pulse
        assert panel.next_event(timeout=30) is not None
        assert panel.output(1)  # the panel locks the door now: every pulse is cut short
        assert wait_until(lambda: pin.state == 0, 30)
        assert watcher.wait_for(lambda: len(_openings(watcher)) == 2, 30)
        off = _openings(watcher)[1]
        assert (off["relay"], off["refers_to"], off.get("earlier_pulses")) == (
            "ended", bob.event_id, [ann.event_id, opening["event_id"]])
        assert PanelOutputMessage.model_validate(off).payload() == off  # what the logger accepts
        assert wait_until(lambda: len(daemon.outbox) == 0, 60)
        assert watcher.barrier(daemon.transport.publish)  # everything the door published has come

        audit, intake = audited(tmp_path / "audit.db", watcher)
        assert intake.quarantined == 0
        rows = {r["user_id"]: r for r in audit.query(device="door-1")}
        # Ann's own pulse and her opening's were both ended: the off is shown once
        assert [o["event_id"] for o in rows["ann"]["ended_by"]] == [off["event_id"]]
        assert [o["event_id"] for o in rows["bob"]["ended_by"]] == [off["event_id"]]
        audit.close()
        assert main(["--db", str(tmp_path / "audit.db"), "query", "--user", "ann"]) == 0
        [printed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(o["relay"], o["earlier_pulses"]) for o in printed["ended_by"]] == [
            ("ended", [ann.event_id, opening["event_id"]])]


def test_a_logger_database_from_before_keeps_showing_the_offs_it_holds(tmp_path):
    """The offs a logger stored before panel_output_ends (one pulse each, refers_to, no ends rows)
    still show under ``ended_by``: the query joins an off's refers_to from panel_outputs itself."""
    import sqlite3

    log = AuditLog(tmp_path / "a.db")
    log.record({**Decision(GRANTED, "front", "staff", "m/1", 99.0, user_id="ann", similarity=99.7).payload(),
                "event_id": "d-1", "timestamp": "2026-01-01T08:00:00+00:00"})
    log.close()
    c = sqlite3.connect(tmp_path / "a.db")  # what an older logger left: the off, no ends
    off = {"schema": "facelink.panel-output/1", "event_id": "o-1", "timestamp": "2026-01-01T08:00:01+00:00",
           "device_id": "front", "command": {"output_no": 0, "control_code": 1, "timer_count": 0},
           "likely_for": None, "relay": "ended", "refers_to": "d-1", "reason": None}
    c.execute("INSERT INTO panel_outputs VALUES (?,?,?,?,?,?,?)",
              ("o-1", off["timestamp"], "front", None, "ended", "d-1", json.dumps(off)))
    c.execute("DELETE FROM panel_output_ends")
    c.commit()
    c.close()
    log = AuditLog(tmp_path / "a.db")
    [row] = log.query(user="ann")
    assert [o["event_id"] for o in row["ended_by"]] == ["o-1"]
    log.close()
