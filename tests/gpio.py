"""GPIO for tests: gpiozero's own mock pin factory (the real gpiozero devices, no Raspberry Pi),
with pins that record every level change in time order and can be told to fail their writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin


class GpioPin(MockPin):
    """A mock pin: ``fail_writes`` makes the next writes raise (the level stays, as on a GPIO
    whose write failed); ``slow_writes`` delays the next writes by ``write_delay_s`` (a busy CPU)."""

    def __init__(self, factory, info) -> None:
        self.fail_writes = self.slow_writes = 0
        self.write_delay_s = 0.0
        super().__init__(factory, info)

    def _set_state(self, value) -> None:
        if self.fail_writes:
            self.fail_writes -= 1
            raise OSError(f"{self.info.name}: write failed")
        if self.slow_writes:
            self.slow_writes -= 1
            time.sleep(self.write_delay_s)
        super()._set_state(value)

    def _change_state(self, value) -> bool:
        changed = super()._change_state(value)
        if changed:
            self.factory.edges.append((time.monotonic(), self.info.name, bool(value)))
        return changed


class GpioFactory(MockFactory):
    def __init__(self) -> None:
        super().__init__(pin_class=GpioPin)
        self.edges: list[tuple[float, str, bool]] = []  # (monotonic, "GPIO23", level) of every change

    def gpio(self, number: int) -> GpioPin:
        return self.pin(f"GPIO{number}")

    def wiegand_frames(self, d0: int, d1: int, end_s: float = 0.02) -> list[list[int]]:
        """The frames a Wiegand input reads: a falling edge on D0 is a 0, on D1 a 1, and a pause
        of more than ``end_s`` ends a frame (the 20 ms limit between two bits)."""
        names = {f"GPIO{d0}": 0, f"GPIO{d1}": 1}
        frames: list[list[int]] = []
        last = float("-inf")
        for t, name, level in self.edges:
            if name in names and not level:
                if t - last > end_s:
                    frames.append([])
                frames[-1].append(names[name])
                last = t
        return frames


@contextmanager
def mock_gpio() -> Iterator[GpioFactory]:
    """gpiozero devices made inside use a fresh :class:`GpioFactory`."""
    previous, Device.pin_factory = Device.pin_factory, GpioFactory()
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = previous
