"""Door output: what a GRANTED decision does to the lock. Off by default (relay = "none")."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from typing import Any, Protocol

log = logging.getLogger(__name__)


class DoorRelay(Protocol):
    def pulse(self, user_id: str | None) -> None: ...

    def close(self) -> None: ...


class NoRelay:
    def pulse(self, user_id: str | None) -> None:
        return None

    def close(self) -> None:
        return None


class GpioRelay:
    """Energise a relay on a GPIO pin for ``pulse_s`` (gpiozero, Raspberry Pi)."""

    def __init__(self, pin: int, pulse_s: float) -> None:
        try:
            from gpiozero import OutputDevice  # type: ignore
        except ImportError as exc:
            raise RuntimeError("door.relay=gpio needs gpiozero: pip install 'facelink[pi]'") from exc
        self._dev = OutputDevice(pin, active_high=True, initial_value=False)
        self._pulse_s = pulse_s

    def pulse(self, user_id: str | None) -> None:
        self._dev.on()
        threading.Timer(self._pulse_s, self._dev.off).start()

    def close(self) -> None:
        self._dev.off()
        self._dev.close()


class CommandRelay:
    """Run a command on GRANTED (FACELINK_USER_ID in its environment); never blocks the pipeline."""

    def __init__(self, command: str, timeout_s: float) -> None:
        if not command:
            raise RuntimeError("door.relay=command needs door.command")
        self._command = command
        self._timeout = timeout_s + 10

    def pulse(self, user_id: str | None) -> None:
        env = {**os.environ, "FACELINK_USER_ID": user_id or ""}

        def run() -> None:
            try:
                subprocess.run(self._command, shell=True, env=env, timeout=self._timeout, check=True)
            except (subprocess.SubprocessError, OSError) as exc:
                log.error("door command failed: %s", exc)

        threading.Thread(target=run, name="door-command", daemon=True).start()

    def close(self) -> None:
        return None


def make_relay(door: Any) -> DoorRelay:
    if door.relay == "gpio":
        return GpioRelay(door.gpio_pin, door.pulse_s)
    if door.relay == "command":
        return CommandRelay(door.command, door.pulse_s)
    return NoRelay()
