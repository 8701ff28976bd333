"""A serial badge reader opened (at start, or reopened after an unplug) while a reader's line is
on its way: the line's tail is no badge of its own (found in review). ``H10301:18:12345`` read
from its ninth byte is ``8:12345``, which parse_typed reads as H10301:8:12345 -- another card."""

from __future__ import annotations

import os

from facelink.access import badges
from facelink.access.badges import BadgeSources

from .panel import open_pty, wait_until
from .test_badges import _settings


def _read_until(sources: BadgeSources, last: str) -> list[str]:
    got = []  # lines are read in order: once the last one is in, any earlier badge is too
    assert wait_until(lambda: got.extend(sources.drain()) or any(r.credential == last for r in got), 10)
    return [r.credential for r in got]


def test_the_tail_of_a_line_on_its_way_when_the_reader_opened_is_no_badge(monkeypatch):
    """The bytes of a line that began before the open go on arriving after it: dropped up to the
    line's end (counted in badges_rejected); the next line is read. SERIAL_QUIET_S is raised so
    that "within the quiet time of the open" does not depend on how fast this test runs."""
    monkeypatch.setattr(badges, "SERIAL_QUIET_S", 30.0)
    master, slave, path = open_pty()
    sources = BadgeSources(_settings(sources=["serial"], serial_device=path), reopen_backoff_s=(60.0, 60.0))
    try:
        sources.start()
        os.write(master, b"8:12345\r\n")  # the rest of "H10301:18:12345"
        os.write(master, b"18:777\n")
        assert _read_until(sources, "H10301:18:777") == ["H10301:18:777"]
        assert sources.rejected == 1 and sources.serial_in_sync.is_set()
    finally:
        sources.close()
        os.close(master)
        os.close(slave)


def test_what_arrived_before_the_reader_opened_is_not_read(tmp_path):
    """Bytes waiting on the line when the reader opens (a half line, or a whole card tapped while
    nobody listened) are discarded (open_raw's TCSAFLUSH): a tap from before the door was reading
    opens nothing later, and a half line is not joined to the next one."""
    master, slave, path = open_pty()
    os.write(master, b"H10301:18:999\nH10301:1")
    sources = BadgeSources(_settings(sources=["serial"], serial_device=path), reopen_backoff_s=(60.0, 60.0))
    try:
        sources.start()
        assert sources.serial_in_sync.wait(10)  # quiet since the open: the next byte begins a line
        os.write(master, b"8:4242\n")
        assert _read_until(sources, "H10301:8:4242") == ["H10301:8:4242"]
        assert sources.rejected == 0
    finally:
        sources.close()
        os.close(master)
        os.close(slave)
