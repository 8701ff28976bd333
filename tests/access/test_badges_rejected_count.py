"""badges_rejected is counted by every reader's thread (serial, evdev, MQTT): a refusal in one
reader while another counts its own is never lost. ``self.rejected += 1`` is a read, an add and a
write; CPython 3.11 rarely switches threads inside it, so two readers are made to meet there: the
first to count holds still (inside the add) until the second has either asked for the lock or
reached the add itself. Without the lock both add to the same value read: one refusal is lost."""

from __future__ import annotations

import threading

from facelink.access.badges import BadgeSources
from facelink.config import load_settings

DEADLINE_S = 30.0  # only reached if the second reader neither asks for the lock nor adds


def test_two_readers_refusing_at_once_are_both_counted():
    settings = load_settings()
    settings.matching.mode = "card_and_face"
    badges = BadgeSources(settings)
    second_there = threading.Event()  # the second reader asked for the lock, or reached the add
    first_adding = threading.Event()
    second: list[threading.Thread] = []

    class Count(int):
        """The counter's value: its add is where the first refusal holds still."""

        def __add__(self, other: int) -> Count:
            if threading.current_thread() is second[0]:
                second_there.set()
            else:
                first_adding.set()
                assert second_there.wait(DEADLINE_S), "the second reader never got this far"
            return Count(int(self) + other)

    class Lock:
        """The real lock; asking for it from the second reader lets the first go on."""

        def __init__(self, lock: threading.Lock) -> None:
            self.lock = lock

        def __enter__(self) -> bool:
            if second and threading.current_thread() is second[0]:
                second_there.set()
            return self.lock.__enter__()

        def __exit__(self, *exc) -> None:
            self.lock.__exit__(*exc)

    badges.rejected, badges._lock = Count(0), Lock(badges._lock)
    results: dict[str, bool] = {}
    first = threading.Thread(target=lambda: results.__setitem__("serial", badges.put("not a badge", "serial")))
    second.append(threading.Thread(target=lambda: results.__setitem__("evdev", badges.put("12:ab", "evdev"))))
    first.start()
    assert first_adding.wait(DEADLINE_S)  # the serial reader is counting its refusal
    second[0].start()  # the evdev reader refuses one too, meanwhile
    first.join(DEADLINE_S)
    second[0].join(DEADLINE_S)
    assert results == {"serial": False, "evdev": False}
    assert badges.health()["badges_rejected"] == 2, "one of two refusals counted at once was lost"
    assert badges.queue.empty()
