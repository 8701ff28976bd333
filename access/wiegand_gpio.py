"""A plain Wiegand output on two Raspberry Pi GPIO pins (D0, D1) for panels without OSDP.

Both lines idle high (wire them through an open-collector stage or a level shifter to the panel's
5 V inputs); each bit is a low pulse on D0 (0) or D1 (1). Timing comes from
``wiegand.pulse_train``; the sender runs on a thread of its own (a frame lasts 50-75 ms at the
default 2 ms interval) and never blocks the pipeline: it sleeps between pulses and busy-waits only
the last half millisecond and the 50 us width.

Fail closed, and said: a frame that breaks off (a GPIO write raises) or is stretched past the
Wiegand limit between two bits (the panel ends the frame there and reads a parity error) did not
open the door; the sender reports it through ``on_failure`` (the daemon's ACTUATION_FAILED when
the panel is what opens the door). Both lines are then set idle; a line that cannot be is
``stuck`` (every later frame would be garbage to the panel): health says it and sends refuse until
the line goes idle again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from facelink.errors import ConfigError, FailureReport, ignore_failure

from .wiegand import Credential, Pulse, pulse_train

log = logging.getLogger(__name__)

MAX_GAP_US = 20_000  # Wiegand: at most 20 ms from one bit's pulse to the next, or the frame ends
FRAME_GAP_S = 0.05  # quiet time after a frame: two frames back to back would read as one
SPIN_US = 500  # the last half millisecond before a pulse is busy-waited (sleep is not that precise)


class Line(Protocol):
    """One output line: ``on()`` pulls it low (active), ``off()`` lets it idle high."""

    def on(self) -> None: ...

    def off(self) -> None: ...

    def close(self) -> None: ...


def _wait_until(t_ns: int) -> None:
    while (left_ns := t_ns - time.perf_counter_ns()) > SPIN_US * 1000:
        time.sleep((left_ns - SPIN_US * 1000) / 1e9)
    while time.perf_counter_ns() < t_ns:
        pass


class WiegandTransmitter:
    """Sends one credential at a time as a D0/D1 pulse train on two :class:`Line` s."""

    JOIN_S = 2.0  # close(): how long to wait for a frame being sent (a 37-bit frame at 20 ms: 0.74 s)

    def __init__(self, d0: Line, d1: Line, width_us: int, interval_us: int) -> None:
        pulse_train([0], width_us, interval_us)  # the timing is checked here, not at the first GRANTED
        self._lines = {"D0": d0, "D1": d1}
        self.width_us, self.interval_us = width_us, interval_us
        self._lock = threading.Lock()  # one frame on the wire at a time
        self._state = threading.Lock()  # _closed, _running, stuck
        self._running: set[threading.Thread] = set()
        self._closed = False
        self.stuck: str | None = None  # a line could not be set idle: why (None: both idle)
        self.sent = self.failed = 0

    def send(self, credential: Credential, event_id: str, on_failure: FailureReport = ignore_failure) -> str | None:
        """Start sending ``credential``; why it was not started, or None. A frame that fails on the
        wire is reported later through ``on_failure`` (from the sender's thread)."""
        pulses = pulse_train(credential.bits(), self.width_us, self.interval_us)
        with self._state:
            if self._closed:
                return "Wiegand output is stopping: nothing was sent"
            if self.stuck is not None and not self._idle():
                return f"Wiegand output not sent: {self.stuck}"
            thread = threading.Thread(target=self._send, args=(pulses, credential, event_id, on_failure),
                                      name="wiegand-out", daemon=True)
            self._running.add(thread)
            thread.start()
        log.info("Wiegand out %s (%d bits) for event %s", credential, len(pulses), event_id)
        return None

    def _send(self, pulses: list[Pulse], credential: Credential, event_id: str, on_failure: FailureReport) -> None:
        reason = None
        try:
            with self._lock:
                try:
                    reason = self._transmit(pulses)
                finally:
                    time.sleep(FRAME_GAP_S)  # the next frame must not run into this one
        except Exception as exc:  # noqa: BLE001 - a GPIO write failed: the frame broke off
            reason = f"Wiegand output failed: {type(exc).__name__}: {exc}"
        finally:
            with self._state:
                self._running.discard(threading.current_thread())
                if reason is not None and not self._idle():
                    reason += f"; {self.stuck}"
                if reason is None:
                    self.sent += 1
                else:
                    self.failed += 1
        if reason is None:
            return
        reason = f"{reason} (credential {credential}, event {event_id}): the panel did not get it"
        log.error("%s", reason)
        on_failure(reason[:300])

    def _transmit(self, pulses: list[Pulse]) -> str | None:
        """Put the frame on the wire; why the panel will have dropped it, or None."""
        t0 = time.perf_counter_ns()
        started: list[int] = []
        for p in pulses:
            _wait_until(t0 + p.start_us * 1000)
            line = self._lines[p.line]
            started.append(time.perf_counter_ns())
            line.on()  # active low: "on" pulls the line down
            _wait_until(started[-1] + p.width_us * 1000)
            line.off()
        gap_us = max((b - a for a, b in zip(started, started[1:])), default=0) / 1000
        if gap_us > MAX_GAP_US:
            return (f"Wiegand frame broken: {gap_us / 1000:.1f} ms between two bits (the limit is "
                    f"{MAX_GAP_US / 1000:.0f} ms; the CPU was busy)")
        return None

    def _idle(self) -> bool:
        """Let both lines idle (under ``_state``); False, and ``stuck`` says why, when one cannot."""
        for name, line in self._lines.items():
            try:
                line.off()
            except Exception as exc:  # noqa: BLE001 - said on health, refused on the next send
                if self.stuck is None:
                    log.critical("Wiegand %s line cannot be set idle: %s", name, exc)
                self.stuck = f"Wiegand {name} line may be held active ({type(exc).__name__}: {exc})"[:300]
                return False
        if self.stuck is not None:
            log.warning("Wiegand lines idle again (they had failed: %s)", self.stuck)
            self.stuck = None
        return True

    def close(self) -> None:
        """No new frames; wait for the one being sent (its failure is still reported), then let
        the lines idle and release them."""
        with self._state:
            self._closed = True
            running = list(self._running)
        for thread in running:
            thread.join(self.JOIN_S)
        with self._state:
            self._idle()
        for line in self._lines.values():
            try:
                line.close()
            except Exception:  # noqa: BLE001 - shutdown goes on
                log.exception("Wiegand: closing a line failed")


class WiegandGpioOutput(WiegandTransmitter):
    """The transmitter on two gpiozero pins (BCM numbering)."""

    def __init__(self, d0_pin: int, d1_pin: int, width_us: int, interval_us: int) -> None:
        try:
            from gpiozero import DigitalOutputDevice  # type: ignore
        except ImportError as exc:
            raise ConfigError("door.output=wiegand needs gpiozero: pip install 'facelink[pi]'") from exc
        lines = []
        for key, pin in (("d0_pin", d0_pin), ("d1_pin", d1_pin)):
            try:
                lines.append(DigitalOutputDevice(pin, active_high=False, initial_value=False))
            except Exception as exc:  # noqa: BLE001 - gpiozero raises many kinds (no pin factory, busy pin)
                for line in lines:
                    line.close()
                raise ConfigError(f"wiegand.{key}: cannot use GPIO {pin}: {exc}") from None
        super().__init__(lines[0], lines[1], width_us, interval_us)
