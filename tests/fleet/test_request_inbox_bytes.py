"""The desk's request inbox is bounded in bytes, not only in count (found in review 53).

Requests over 1 KiB are MALFORMED, but the desk learnt that only when its worker decided them:
until then each one sat in the inbox whole (up to 10,000 of them, each as large as the broker
lets a message be: 256 MB with mosquitto's defaults), so a door sending large "requests" on its
own topic while the worker was busy (a journal write waiting out SQLite's 10 s busy timeout
behind a bulk enrollment) made the desk hold whatever it sent. Now a request too large to be one
is refused as it arrives. Real publisher, real mosquitto."""

from __future__ import annotations

from .conftest import wait_for
from .test_publisher import desk, own  # noqa: F401 - the desk fixture


def test_oversized_requests_are_refused_on_arrival_not_held(desk, listeners):  # noqa: F811
    d = desk()  # its worker is not stepping: a busy desk
    door = listeners([], "door-1")
    junk = "x" * 1_000_000
    for _ in range(40):
        door.client.publish(own("door-1"), junk, qos=1)
    held = lambda: sum(len(p) for _, _, p in list(d.publisher._inbox.queue))  # noqa: E731
    assert wait_for(lambda: d.publisher._inbox.qsize() + d.publisher.gate.refused.get("MALFORMED", 0) >= 40, 60)
    assert held() <= 40 * 1024, f"the inbox holds {held() / 1e6:.0f} MB of requests no one will answer"
    d.step()
    assert d.publisher.gate.refused.get("MALFORMED", 0) == 40  # each still counted
