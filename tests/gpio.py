"""GPIO for tests: gpiozero's own mock pin factory (the real gpiozero devices, no Raspberry Pi),
with pins that record every level change in time order and can be told to fail their writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin


class GpioPin(MockPin):
    """A mock pin that counts its writes on the factory (which may fail or delay one), and that
    ``fail_writes`` makes raise on its next writes (the level stays, as on a GPIO whose write
    failed)."""

    def __init__(self, factory, info) -> None:
        self.fail_writes = 0
        super().__init__(factory, info)

    def _set_state(self, value) -> None:
        f = self.factory
        f.writes += 1
        if f.writes in f.slow:  # (before failing: a write can hang, then fail)
            time.sleep(f.slow[f.writes])
        if self.fail_writes or f.writes in f.failing:
            self.fail_writes = max(0, self.fail_writes - 1)
            raise OSError(f"{self.info.name}: write failed")
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
        self.writes = 0  # writes to any pin so far
        self.failing: set[int] = set()  # write numbers (1-based, all pins) that raise
        self.slow: dict[int, float] = {}  # write number -> seconds it takes

    def fail(self, *after: int) -> None:
        """Each of the writes ``after`` + 1 writes from now fails (0: the next one). A Wiegand bit k
        (0-based) is two writes: its on() is write 2k + 1 of the frame, its off() 2k + 2."""
        self.failing |= {self.writes + n + 1 for n in after}

    def delay(self, after: int, seconds: float) -> None:
        """The write ``after`` + 1 writes from now takes ``seconds``."""
        self.slow[self.writes + after + 1] = seconds

    def gpio(self, number: int) -> GpioPin:
        return self.pin(f"GPIO{number}")

    def wiegand_frames(self, d0: int, d1: int, end_s: float = 0.045) -> list[list[int]]:
        """The frames a Wiegand input reads: a falling edge on D0 is a 0, on D1 a 1, and a pause
        of more than ``end_s`` ends a frame (FaceLink leaves 50 ms between frames; a panel ends
        one after ~20 ms: this reads a frame the transmitter was told not to judge by time)."""
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
