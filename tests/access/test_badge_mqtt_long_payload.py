"""An MQTT badge payload longer than MAX_LINE: refused whole, never cut to another badge."""

from __future__ import annotations

from .panel import wait_until
from .test_badges import mqtt_badges


def test_an_mqtt_badge_too_long_is_refused_not_cut_to_another_badge(broker):
    """A payload over MAX_LINE is refused whole: cut at MAX_LINE, "18:123456" padded to 257 bytes
    (card 123456 is out of range: refused) was read as "18:12345", another badge."""
    with mqtt_badges(broker, "badge-pub-long", b"18:777") as (sources, pub, got):
        assert got and sources.rejected == 0
        padded = b" " * 248 + b"18:123456"
        assert len(padded) == 257
        pub.publish("facelink/door-1/credential", padded, qos=1).wait_for_publish(5)
        late = []
        assert wait_until(lambda: late.extend(sources.drain()) or sources.rejected or
                          any(r.credential != "H10301:18:777" for r in late), 10)
        assert [r.credential for r in late if r.credential != "H10301:18:777"] == []
        assert sources.rejected == 1
