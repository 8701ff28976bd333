"""PulseSwitch.end() reports a failed off as such: the pulses it did not end, ``off_failed`` saying
why (found in review, it had no test: the daemon's log said "the running pulse ended" while the
lock was still released; then, until the tenth session, it said nothing had run)."""

from __future__ import annotations

from facelink.device.door import PulseSwitch

from ..waiting import wait_until
from .test_relay import Output


def test_an_end_whose_off_fails_says_so_and_what_still_runs():
    from facelink.device.door import EndedPulse

    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=30.0)
    switch.pulse("granted-1")
    switch.pulse("granted-2")
    out.fail_off = 1
    try:
        # the panel's off did not lock the door (yet): retried, stuck; the pulses it did not end
        assert switch.end() == EndedPulse("granted-2", earlier=("granted-1",), off_failed=switch.stuck)
        assert switch.stuck is not None and out.released
        # the retry worked (stuck is cleared just after the off() that sets switched_off returns)
        assert out.switched_off.wait(30) and wait_until(lambda: switch.stuck is None, 30) and not out.released
        assert switch.end() is None  # and nothing is running now
    finally:
        switch.close()


def test_an_end_says_what_the_pulse_it_ended_was_started_for():
    """The panel's off record names the GRANTED (or panel opening) whose pulse it ended: the
    newest, which superseded the older one's end, and the older one still inside its own pulse_s
    (it was cut short too: tests/device/test_overlapping_pulses_ended.py)."""
    from facelink.device.door import EndedPulse

    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=30.0)
    try:
        switch.pulse("granted-1")
        switch.pulse("opening-2")
        assert switch.end() == EndedPulse("opening-2", earlier=("granted-1",)) and not out.released
        assert switch.end() is None
    finally:
        switch.close()


def test_an_off_ends_a_newer_pulse_that_followed_a_failed_off():
    """Found in review: once an off() had failed (``stuck``), a newer pulse replaces the retry with
    its own timer, but ``end()`` still refused because ``stuck`` was set ("retried already"): the
    panel's off then left the lock released for the newer pulse's whole ``pulse_s`` (and was
    recorded ``not_ended``). The newer pulse is ended like any other."""
    from facelink.device.door import EndedPulse

    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=30.0)
    switch.OFF_RETRY_S = 30.0  # the retry stays pending: the newer pulse comes first
    try:
        switch.pulse("granted-1")
        out.fail_off = 1
        assert switch.end().off_failed == switch.stuck is not None  # retried later
        switch.pulse("granted-2")  # on() works: a pulse of its own, its timer replaces the retry
        assert out.released
        assert switch.end() == EndedPulse("granted-2")  # the panel's off locks the door now
        assert not out.released and switch.stuck is None
        assert switch.end() is None
    finally:
        switch.close()


def test_an_end_says_how_many_overlapping_pulses_it_could_not_name():
    """Found in review (75): past PulseSwitch.OVERLAPS_KEPT pulses inside their own pulse_s (a busy
    door, pulse_s up to 60 s, each GRANTED and the panel's opening for it a pulse), the oldest were
    dropped without a trace: the off's record named 63 earlier pulses and nothing said that more
    GRANTEDs' pulses were cut short, so their trail read as if each held the lock its whole time.
    The record now says how many it could not name (``earlier_pulses_unnamed``)."""
    from facelink.device.door import PulseSwitch
    from facelink.mqtt.schema import PanelOutputMessage

    now = [100.0]
    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=60.0, clock=lambda: now[0])
    try:
        for i in range(70):  # one every 0.1 s: all 70 inside their own 60 s when the off comes
            switch.pulse(f"granted-{i}")
            now[0] += 0.1
        assert switch.running().unnamed == 6
        ended = switch.end()
        assert ended.started_for == "granted-69"
        assert ended.earlier == tuple(f"granted-{i}" for i in range(6, 69)) and ended.unnamed == 6
        off = {"schema": "facelink.panel-output/1", "event_id": "o-1", "timestamp": "2026-01-01T08:00:01+00:00",
               "device_id": "front", "command": {"output_no": 0, "control_code": 1, "timer_count": 0},
               "likely_for": None, "relay": "ended", "refers_to": ended.started_for,
               "reason": None, "earlier_pulses": list(ended.earlier), "earlier_pulses_unnamed": ended.unnamed}
        assert PanelOutputMessage.model_validate(off).payload() == off
        # those whose own time had passed ran it whole: not counted
        for i in range(70):
            switch.pulse(f"again-{i}")
            now[0] += 0.1
        now[0] += 53.65  # again-0 .. again-6 have run their 60 s (again-0 .. 5 the unnamed ones)
        assert switch.running().unnamed == 0 and len(switch.running().earlier) == 62
    finally:
        switch.close()


def test_an_off_while_an_earlier_off_is_retried_says_it_failed_not_that_nothing_ran():
    """Found in review 88: while an earlier off()'s retry was pending (the lock output stuck on:
    a pulse's own off, or the panel's off, had failed), the panel's next off found "nothing
    running" and was recorded ``not_ended`` -- "no pulse of the door's ran" -- while the door
    stood released. It is tried again at once: still failing, ``off_failed`` (naming no pulse:
    the first failure did); working, nothing ended."""
    from facelink.device.door import EndedPulse

    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=0.05)
    switch.OFF_RETRY_S = 30.0  # the retry stays pending
    try:
        out.fail_off = 2
        switch.pulse("granted-1")  # its own off at 0.05 s fails: stuck, retried in 30 s
        assert wait_until(lambda: switch.stuck is not None, 30) and out.released
        assert switch.end() == EndedPulse(None, off_failed=switch.stuck)  # tried again: fails again
        assert out.fail_off == 0 and out.released and switch.stuck is not None
        assert switch.end() is None  # tried again: it works, the door is locked
        assert not out.released and switch.stuck is None
    finally:
        switch.close()


def test_the_panel_records_an_off_during_a_retry_as_off_failed():
    """The same, as the panel's off record: ``off_failed`` with the reason and no pulse named
    (validated by the schema), not ``not_ended``."""
    from facelink.mqtt.schema import PanelOutputMessage

    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=30.0)
    switch.OFF_RETRY_S = 30.0
    try:
        switch.pulse("granted-1")
        out.fail_off = 2
        first = switch.end()
        assert first.off_failed is not None and first.started_for == "granted-1"
        again = switch.end()  # the panel's off repeated while the retry is pending
        assert again is not None and again.off_failed == switch.stuck and again.started_for is None
        record = {"schema": "facelink.panel-output/1", "event_id": "o-2", "timestamp": "2026-01-01T08:00:01+00:00",
                  "device_id": "front", "command": {"output_no": 0, "control_code": 1, "timer_count": 0},
                  "likely_for": None, "relay": "off_failed", "refers_to": None, "reason": again.off_failed}
        assert PanelOutputMessage.model_validate(record).relay == "off_failed"
    finally:
        switch.close()
