"""Keyboard-wedge (evdev) badge readers, key by key: a badge is read only from all its own
keystrokes -- a key that is not a digit, ':' or Enter, or keystrokes the kernel dropped, refuse it
(never read from the keys left: that can be another badge, another user's)."""

from __future__ import annotations

import pytest

from facelink.access.badges import BadgeSources

from .test_badges import _settings

# -- keyboard-wedge (evdev) readers: what the kernel hands over, key by key --------------------
# codes from linux/input-event-codes.h; the reader is driven through BadgeSources._read_evdev with
# this stand-in for python-evdev's ``ecodes`` (evdev is an optional extra, not installed here)
_KEYS = {2: "KEY_1", 3: "KEY_2", 4: "KEY_3", 5: "KEY_4", 6: "KEY_5", 7: "KEY_6", 8: "KEY_7",
         9: "KEY_8", 10: "KEY_9", 11: "KEY_0", 12: "KEY_MINUS", 15: "KEY_TAB", 28: "KEY_ENTER",
         32: "KEY_D", 39: "KEY_SEMICOLON", 42: "KEY_LEFTSHIFT", 57: "KEY_SPACE"}
_EVDEV = type("evdev", (), {"ecodes": type("ecodes", (), {
    "EV_SYN": 0, "EV_KEY": 1, "EV_MSC": 4, "SYN_REPORT": 0, "SYN_DROPPED": 3, "MSC_SCAN": 4, "KEY": _KEYS})})
_CODE = {name: code for code, name in _KEYS.items()}
_CHAR = {**{c: f"KEY_{c}" for c in "0123456789"}, "\n": "KEY_ENTER", "-": "KEY_MINUS", "\t": "KEY_TAB",
         "D": "KEY_D", " ": "KEY_SPACE"}


class _Event:
    def __init__(self, type_: int, code: int, value: int) -> None:
        self.type, self.code, self.value = type_, code, value


def _keystrokes(text: str) -> list[_Event]:
    """What a keyboard-wedge reader typing ``text`` makes the kernel report (':' is Shift+;)."""
    out = []
    for ch in text:
        keys = ["KEY_LEFTSHIFT", "KEY_SEMICOLON"] if ch == ":" else [_CHAR[ch]]
        for value in (1, 0):
            for key in keys if value else reversed(keys):
                out += [_Event(4, 4, _CODE[key]), _Event(1, _CODE[key], value), _Event(0, 0, 0)]
    return out


class _WedgeReader:
    def __init__(self, events: list[_Event]) -> None:
        self.events = events

    def read_loop(self):
        yield from self.events


def _typed(events: list[_Event]) -> tuple[list[str], int]:
    sources = BadgeSources(_settings(sources=["evdev"]))
    with pytest.raises(OSError, match="stopped sending"):  # the stand-in device runs out of events
        sources._read_evdev(_WedgeReader(events), _EVDEV)
    return [r.credential for r in sources.drain()], sources.rejected


def test_a_keyboard_wedge_badge_is_read_key_by_key():
    assert _typed(_keystrokes("18:12345\n" + str((18 << 16) | 12345) + "\n")) == \
        (["H10301:18:12345", "H10301:18:12345"], 0)


@pytest.mark.parametrize("typed", ["18-12345\n", "18 12345\n", "0012D687\n", "1193\t017\n"])
def test_a_key_a_wedge_reader_types_that_is_not_a_digit_refuses_the_badge(typed):
    """A key other than a digit, ':' or Enter (Shift aside) is not left out: "18-12345" read as
    1812345 is H10301:27:42873 -- another badge, maybe another user's; a hex reader's "0012D687"
    read as 0012687 is H10301:0:12687."""
    assert _typed(_keystrokes(typed)) == ([], 1)


def test_keystrokes_the_kernel_dropped_refuse_the_badge_they_were_part_of():
    """The kernel's evdev buffer overflowed (the reader typed faster than the door read): it
    drops the keystrokes it held and says SYN_DROPPED. The badge typed across it is refused -- not
    read from the keys that are left (here "18:123", then "7" of the next badge, and its Enter:
    H10301:18:1237, another badge) -- and the next whole badge is read again."""
    dropped = [_Event(0, 3, 0)]
    events = _keystrokes("18:123") + dropped + _keystrokes("7\n") + _keystrokes("18:4242\n")
    assert _typed(events) == (["H10301:18:4242"], 1)
