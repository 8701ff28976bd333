"""The outbox: durable, ordered, bounded; events leave only when acknowledged."""

from __future__ import annotations

from facelink.mqtt.outbox import Outbox


def test_order_ack_and_reopen(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for i in range(5):
        box.put(f"e{i}", "t", {"i": i})
    box.put("e1", "t", {"i": 1})  # the same event id is stored once
    assert [e.event_id for e in box.peek(10)] == ["e0", "e1", "e2", "e3", "e4"]
    box.ack([box.peek(1)[0].seq])
    box.close()
    again = Outbox(tmp_path / "o.db")  # survives a restart
    assert [e.event_id for e in again.peek(10)] == ["e1", "e2", "e3", "e4"]
    assert len(again) == 4


def test_bound_drops_oldest_and_counts(tmp_path):
    box = Outbox(tmp_path / "o.db", max_events=10)
    for i in range(15):
        box.put(f"e{i}", "t", {"i": i})
    assert len(box) == 10 and box.dropped() == 5
    assert box.peek(1)[0].event_id == "e5"
