"""A plain Wiegand output on two Raspberry Pi GPIO pins (D0, D1) for panels without OSDP.

Both lines idle high (wire them through an open-collector stage or a level shifter to the panel's
5 V inputs); each bit is a low pulse on D0 (0) or D1 (1). Timing comes from
``wiegand.pulse_train``; Python on Linux keeps the 2 ms interval comfortably but the 50 us
width is busy-waited, so the sender runs on a thread of its own and never blocks the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time

from facelink.errors import ConfigError

from .wiegand import Credential, pulse_train

log = logging.getLogger(__name__)


def _busy_until(t_ns: int) -> None:
    while time.perf_counter_ns() < t_ns:
        pass


class WiegandGpioOutput:
    def __init__(self, d0_pin: int, d1_pin: int, width_us: int, interval_us: int) -> None:
        try:
            from gpiozero import DigitalOutputDevice  # type: ignore
        except ImportError as exc:
            raise ConfigError("door.output=wiegand needs gpiozero: pip install 'facelink[pi]'") from exc
        self._lines = {"D0": DigitalOutputDevice(d0_pin, active_high=False, initial_value=False),
                       "D1": DigitalOutputDevice(d1_pin, active_high=False, initial_value=False)}
        self.width_us, self.interval_us = width_us, interval_us
        self._lock = threading.Lock()

    def send(self, credential: Credential, event_id: str) -> bool:
        pulses = pulse_train(credential.bits(), self.width_us, self.interval_us)
        threading.Thread(target=self._send, args=(pulses,), name="wiegand-out", daemon=True).start()
        log.info("Wiegand out %s (%d bits) for event %s", credential, len(pulses), event_id)
        return True

    def _send(self, pulses) -> None:
        with self._lock:
            t0 = time.perf_counter_ns()
            for p in pulses:
                _busy_until(t0 + p.start_us * 1000)
                line = self._lines[p.line]
                line.on()  # active low: "on" pulls the line down
                _busy_until(t0 + (p.start_us + p.width_us) * 1000)
                line.off()

    def close(self) -> None:
        for line in self._lines.values():
            line.close()
