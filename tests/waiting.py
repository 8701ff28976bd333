"""The one way tests wait: poll a condition until a deadline (never a fixed sleep standing in for
"it has probably happened by now")."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """True as soon as ``predicate()`` is truthy; after ``timeout`` seconds, its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def round_trip(publish: Callable[[str], object], arrived: Callable[[str], bool], timeout: float = 60.0,
               each: float = 1.0) -> bool:
    """The one way tests ask "is this MQTT subscriber live, and has it got everything the broker
    had for it": a fresh marker, ``publish(marker)``-ed now, comes back (``arrived(marker)``).

    A marker is re-published every ``each`` seconds until ``timeout``: after a (re)connect the
    CONNACK comes before the SUBSCRIBE is through, and a marker sent in that gap is lost, never
    late. Once one arrives, everything the broker received before it from the same connection
    has been delivered too (MQTT keeps one connection's messages in order)."""
    deadline = time.monotonic() + timeout

    def one() -> bool:
        marker = f"probe-{time.monotonic_ns()}"  # fresh each time: a late earlier one is not it
        publish(marker)
        return wait_until(lambda: arrived(marker), max(0.0, min(each, deadline - time.monotonic())))

    while True:
        if one():
            return True
        if time.monotonic() >= deadline:
            return False
