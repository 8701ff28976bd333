"""A pulse whose end cannot be scheduled must not leave the lock released (found in review).

PulseSwitch.pulse() switches the output on and then starts the threading.Timer that switches it
off ``pulse_s`` later. When that timer cannot start (``RuntimeError: can't start new thread``:
the unit's TasksMax, memory), the error went to the caller -- GpioRelay reports it as
ACTUATION_FAILED, "the door did not open" -- while the pin stayed on: the lock released with
nothing left to lock it (no timer, ``stuck`` None, health silent) until the next GRANTED or a
restart. The real gpiozero relay on its mock pins; only the thread start is made to fail."""

from __future__ import annotations

import threading

from facelink.device.door import GpioRelay


def test_a_pulse_whose_end_cannot_be_scheduled_locks_the_door_again(gpio, monkeypatch):
    relay = GpioRelay(17, 30.0)
    pin = gpio.gpio(17)
    failures: list[str] = []
    real_start = threading.Timer.start

    def no_thread(self) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Timer, "start", no_thread)
    try:
        relay.pulse("emp-7", on_failure=failures.append)
    finally:
        monkeypatch.setattr(threading.Timer, "start", real_start)
    try:
        assert len(failures) == 1 and "can't start new thread" in failures[0]  # ACTUATION_FAILED ...
        assert pin.state == 0, "ACTUATION_FAILED was reported, but the lock output is still on with no timer to end it"
    finally:
        relay.close()


def test_a_second_pulse_whose_end_cannot_be_scheduled_does_not_cancel_the_first_ones_end(gpio, monkeypatch):
    """The lock is released by a first GRANTED; a second one's timer cannot start. The first
    pulse's timer had already been cancelled (and the generation moved on): nothing ended it."""
    relay = GpioRelay(17, 0.3)
    pin = gpio.gpio(17)
    failures: list[str] = []
    relay.pulse("emp-7", on_failure=failures.append)
    assert pin.state == 1 and not failures
    real_start = threading.Timer.start

    def no_thread(self) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Timer, "start", no_thread)
    try:
        relay.pulse("emp-8", on_failure=failures.append)
    finally:
        monkeypatch.setattr(threading.Timer, "start", real_start)
    try:
        from ..waiting import wait_until

        assert len(failures) == 1
        assert wait_until(lambda: pin.state == 0, 5), "the lock output stays on: the first pulse's end was cancelled"
    finally:
        relay.close()
