"""OSDP output control code 3 -- permanent off, the timed operation allowed to complete: for the
door's relay, the running pulse ends at its own time (nothing is ended now) and nothing more opens
the door for it. Found in review: codes 1 and 6 were recorded (``facelink.panel-output/1``, relay
ended / not_ended) but a 3 left no record, so the trail could not say that the panel had told the
door to lock once the pulse was done. Now it is recorded as it comes: ``left_running`` naming the
pulse that ends at its time, or ``not_ended`` with none running. A real libosdp Control Panel on a
pty (secure channel), the real daemon, GpioRelay on gpiozero's mock pins, a real mosquitto and the
real audit log fed what the broker delivered."""

from __future__ import annotations

import json

from facelink.audit.logger import main
from facelink.device.door import GpioRelay
from facelink.mqtt.schema import PanelOutputMessage
from tests.waiting import wait_until

from .test_osdp_door import _openings, audited, watched_osdp_door

RELAY = 17


def test_the_panels_off_after_the_timed_operation_is_recorded_with_the_pulse_it_left_running(
        tmp_path, broker, make_settings, engine, gpio, capsys):
    pin = gpio.gpio(RELAY)
    with watched_osdp_door(tmp_path, broker, make_settings, engine, GpioRelay(RELAY, 600.0),
                           client_id="osdp-off-after-watcher") as (daemon, panel, watcher):
        assert panel.output(5)  # the panel opens the door: a 600 s pulse
        assert watcher.wait_for(lambda: len(_openings(watcher)) == 1, 30)
        assert pin.state == 1
        assert panel.output(3)  # permanent off once the timed operation is done: the pulse runs on
        assert watcher.wait_for(lambda: len(_openings(watcher)) == 2, 30)
        assert pin.state == 1 and daemon.relay.running_pulse() is not None
        assert panel.output(1)  # permanent off now: the pulse ends
        assert wait_until(lambda: pin.state == 0, 30)
        assert panel.output(3)  # nothing runs: nothing left running
        assert watcher.wait_for(lambda: len(_openings(watcher)) == 4, 30)
        records = _openings(watcher)
        opening = records[0]["event_id"]
        assert [(r["relay"], r["command"]["control_code"], r["likely_for"], r.get("refers_to")) for r in records] == [
            ("opening", 5, None, None), ("left_running", 3, None, opening), ("ended", 1, None, opening),
            ("not_ended", 3, None, None)]
        for record in records:
            assert PanelOutputMessage.model_validate(record).payload() == record  # what the logger accepts

        audit, intake = audited(tmp_path / "audit.db", watcher)
        assert intake.quarantined == 0 and intake.recorded == 4
        audit.close()
        assert main(["--db", str(tmp_path / "audit.db"), "openings", "--door", "door-1"]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["relay"], r.get("refers_to")) for r in listed] == [
            ("opening", None), ("left_running", opening), ("ended", opening), ("not_ended", None)]
