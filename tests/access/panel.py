"""The test's access panel: a real libosdp Control Panel on the master end of a pty pair."""

from __future__ import annotations

import os
import select
import tty

import pytest

from tests.waiting import wait_until  # noqa: F401 - the tests of this folder import it from here

osdp = pytest.importorskip("osdp", reason="libosdp==3.2.9 not installed")
if not hasattr(osdp, "ControlPanel"):
    pytest.skip("the installed `osdp` is not libosdp", allow_module_level=True)

ADDRESS = 1
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")  # the test site's secure channel base key


class PtyChannel(osdp.Channel):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def read(self, max_bytes: int) -> bytes:
        if not select.select([self.fd], [], [], 0)[0]:
            return b""
        try:
            return os.read(self.fd, max_bytes)
        except (BlockingIOError, OSError):
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self.fd, bytes(buf))
        except BlockingIOError:
            return 0

    def flush(self) -> None:
        return None


class Panel:
    """The test's access panel: a real libosdp CP driving FaceLink's PD over the pty."""

    def __init__(self, master: int, scbk: bytes | None, enforce: bool = True) -> None:
        flags = [osdp.LibFlag.EnforceSecure] if scbk and enforce else []
        self.cp = osdp.ControlPanel([osdp.PDInfo(ADDRESS, PtyChannel(master), scbk=scbk, flags=flags)],
                                    log_level=osdp.LogLevel.Error)
        self.cp.start()
        self.closed = False

    def secure(self, timeout: float = 20.0) -> bool:
        return self.cp.sc_wait(ADDRESS, timeout=timeout)

    def next_event(self, timeout: float = 10.0):
        return self.cp.get_event(ADDRESS, timeout=timeout)

    def led(self, color: int, temporary: bool = True, control_code: int | None = None) -> bool:
        # temporary: 2 shows the colour for timer_count, 1 cancels it; permanent: 1 sets it
        return self.cp.submit_command(ADDRESS, {
            "command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": temporary,
            "control_code": control_code if control_code is not None else 2 if temporary else 1, "on_count": 10, "off_count": 0, "on_color": color,
            "off_color": osdp.CommandLEDColor.Black, "timer_count": 30})

    def output(self, control_code: int) -> bool:
        return self.cp.submit_command(ADDRESS, {"command": osdp.Command.Output, "output_no": 0,
                                                "control_code": control_code, "timer_count": 30})

    def buzzer(self) -> bool:
        return self.cp.submit_command(ADDRESS, {"command": osdp.Command.Buzzer, "reader": 0,
                                                "control_code": 2, "on_count": 2, "off_count": 2,
                                                "rep_count": 1})

    def close(self) -> None:
        """Stop the panel (once: a test may take one panel off the line before another comes)."""
        if not self.closed:
            self.closed = True
            self.cp.teardown()


def drain_line(master: int, quiet_s: float = 0.3, limit_s: float = 5.0) -> None:
    """Read away what a panel that left the line was still owed (a reply it never read would be
    taken by the next panel as the answer to its first command): until the reader has been
    quiet for ``quiet_s`` (it only ever answers), at most ``limit_s``."""
    import time

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and select.select([master], [], [], quiet_s)[0]:
        try:
            os.read(master, 4096)
        except (BlockingIOError, OSError):
            return


def open_pty() -> tuple[int, int, str]:
    """(master fd for the panel, slave fd, slave path for FaceLink's PD); both ends raw."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


