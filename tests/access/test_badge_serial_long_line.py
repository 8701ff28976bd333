"""A serial badge reader's line longer than MAX_LINE: refused whole, never read from its tail."""

from __future__ import annotations

import os

from facelink.access.badges import BadgeSources

from .panel import open_pty, wait_until
from .test_badges import _settings, _waiting


def test_a_serial_line_too_long_is_refused_whole_however_it_arrives(tmp_path):
    """A line longer than MAX_LINE is refused as a whole, not its tail: at 9600 baud the reader
    takes about 19 bytes per 20 ms poll, so any such line arrives in pieces, and the piece after
    the one that went over the limit was read as a badge of its own ("...8:12345" -> H10301:8:12345,
    another badge than the line's). A line of the same length in one piece is refused too."""
    master, slave, path = open_pty()
    sources = BadgeSources(_settings(sources=["serial"], serial_device=path), reopen_backoff_s=(60.0, 60.0))
    try:
        sources.start()
        assert sources.serial_in_sync.wait(10)
        os.write(master, b"\x00" * 300)  # line noise with no line break, then the rest of the line
        assert wait_until(lambda: _waiting(slave) == 0, 10)  # taken on its own: the rest comes later
        os.write(master, b"8:12345\n")
        os.write(master, b" " * 300 + b"18:12345\n")  # in one piece: refused as well
        os.write(master, b"18:777\n")  # the next line is read
        got = []  # lines are read in order: once the last one is in, any earlier badge is too
        assert wait_until(lambda: got.extend(sources.drain()) or any(r.credential == "H10301:18:777" for r in got), 10)
        assert [r.credential for r in got] == ["H10301:18:777"]
        assert sources.rejected == 2
    finally:
        sources.close()
        os.close(master)
        os.close(slave)
