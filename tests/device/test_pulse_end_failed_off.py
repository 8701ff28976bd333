"""PulseSwitch.end() reports a failed off as nothing ended (found in review; it had no test:
the daemon's log said "the running pulse ended" while the lock was still released)."""

from __future__ import annotations

from facelink.device.door import PulseSwitch

from ..waiting import wait_until
from .test_relay import Output


def test_an_end_whose_off_fails_says_nothing_ended():
    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=30.0)
    switch.pulse()
    out.fail_off = 1
    try:
        assert switch.end() is None  # the panel's off did not lock the door (yet): retried, stuck
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
        assert switch.end() is None and switch.stuck is not None  # retried later
        switch.pulse("granted-2")  # on() works: a pulse of its own, its timer replaces the retry
        assert out.released
        assert switch.end() == EndedPulse("granted-2")  # the panel's off locks the door now
        assert not out.released and switch.stuck is None
        assert switch.end() is None
    finally:
        switch.close()
