"""A raw serial line (RS-485 adapter, or one end of a pty in tests) opened with termios alone."""

from __future__ import annotations

import os
import select
import termios
import tty

from facelink.errors import ConfigError

BAUDS = {9600: termios.B9600, 19200: termios.B19200, 38400: termios.B38400,
         57600: termios.B57600, 115200: termios.B115200}


def open_raw(path: str, baud: int) -> int:
    """Open ``path`` non-blocking in raw mode (8N1, no echo, no flow control) at ``baud``, with
    what arrived before the open discarded."""
    if baud not in BAUDS:
        raise ConfigError(f"serial speed {baud} is not one of {sorted(BAUDS)}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"cannot open serial device {path}: {exc.strerror}") from None
    try:
        tty.setraw(fd, termios.TCSAFLUSH)  # TCSAFLUSH: bytes from before the open are nobody's read now
        attrs = termios.tcgetattr(fd)
        attrs[4] = attrs[5] = BAUDS[baud]
        attrs[2] = (attrs[2] & ~termios.CRTSCTS) | termios.CLOCAL | termios.CREAD
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error as exc:
        os.close(fd)
        raise ConfigError(f"{path} is not a serial device: {exc}") from None
    return fd


def read_available(fd: int, max_bytes: int, *, hangup_raises: bool = False) -> bytes:
    """Whatever is waiting (at most ``max_bytes``), never blocking; b'' when nothing is. With
    ``hangup_raises``, a line that hung up (readable, yet nothing to read: the device is gone)
    raises ``OSError`` instead of reading as silence."""
    if not select.select([fd], [], [], 0)[0]:
        return b""
    try:
        data = os.read(fd, max_bytes)
    except (BlockingIOError, InterruptedError):
        return b""
    if not data and hangup_raises:
        raise OSError("the serial line hung up (device unplugged?)")
    return data
