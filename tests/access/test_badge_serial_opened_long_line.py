"""A serial line on its way when the reader opened that is also longer than MAX_LINE.

Its bytes over the limit were thrown away with the line still marked "opened" -- and "opened" ends
at the first quiet poll SERIAL_QUIET_S after the open with nothing buffered, which the thrown-away
buffer now was. A pause in the line then ended the drop mid-line, and the line's tail was read as a
badge of its own: what README rules out for any line over 256 bytes ("refused whole, however it
arrives, never read from its tail") and what the same line gets once the reader is in sync."""

from __future__ import annotations

import os

from facelink.access import badges
from facelink.access.badges import BadgeSources

from .panel import open_pty, wait_until
from .test_badges import _settings, _waiting


def test_a_long_line_on_its_way_at_the_open_is_not_read_from_its_tail(monkeypatch):
    monkeypatch.setattr(badges, "SERIAL_QUIET_S", 1.0)  # the noise surely arrives within it
    master, slave, path = open_pty()
    sources = BadgeSources(_settings(sources=["serial"], serial_device=path), reopen_backoff_s=(60.0, 60.0))
    try:
        sources.start()
        os.write(master, b"\x00" * 300)  # a line on its way at the open, over MAX_LINE, no line break yet
        assert wait_until(lambda: _waiting(slave) == 0, 10)
        wait_until(sources.serial_in_sync.is_set, 3)  # a pause in the line past SERIAL_QUIET_S
        os.write(master, b"8:12345\n")  # the rest of that line
        os.write(master, b"18:777\n")  # the next line is read
        got = []
        assert wait_until(lambda: got.extend(sources.drain()) or any(r.credential == "H10301:18:777" for r in got), 10)
        assert [r.credential for r in got] == ["H10301:18:777"]
        assert sources.rejected == 1
    finally:
        sources.close()
        os.close(master)
        os.close(slave)
