"""The windowed drain against a real mosquitto: order with any window, and rows leave the outbox
only on their PUBACK when the broker goes away mid-drain."""

from __future__ import annotations

import pytest

from facelink.config import MqttSettings
from facelink.mqtt.client import MqttClient, door_client
from facelink.mqtt.outbox import Outbox
from facelink.mqtt.pump import OutboxPump
from facelink.mqtt.topics import DeviceTopics
from tests.waiting import wait_until

from .test_pump import Inbox, _fill


@pytest.mark.parametrize("window", [1, 100])
def test_every_window_delivers_each_event_once_in_order(tmp_path, broker, window):
    inbox = Inbox(broker.port, f"inbox-w{window}")
    outbox = Outbox(tmp_path / "outbox.db")
    sent = _fill(outbox, DeviceTopics("facelink", "w").decision, 400)
    client = door_client(MqttSettings(port=broker.port, device_id="w", publish_window=window))
    assert client.wait_connected(30)
    pump = OutboxPump(outbox, client, window=window).start()
    assert wait_until(lambda: len(outbox) == 0, 120), len(outbox)
    assert inbox.wait_for(400) and inbox.barrier(broker.port)
    assert inbox.ids() == sent  # all, in order, none twice
    pump.close(5)
    client.stop()
    inbox.client.stop()


def test_broker_stopped_mid_drain_keeps_exactly_the_unacknowledged_rows(tmp_path, logger_broker):
    broker = logger_broker  # the inbox may fall more than 1,000 messages behind the drain
    if broker.kind != "mosquitto":  # amqtt forgets what it acknowledged but had not forwarded yet
        pytest.skip("needs mosquitto's persistent sessions (the subscriber's queue survives the restart)")
    inbox = Inbox(broker.port, "inbox-stop", clean_session=False)  # the broker keeps its queue
    outbox = Outbox(tmp_path / "outbox.db")
    sent = _fill(outbox, DeviceTopics("facelink", "s").decision, 3000)
    client = door_client(MqttSettings(port=broker.port, device_id="s"))
    assert client.wait_connected(30)
    pump = OutboxPump(outbox, client, window=100, ack_timeout_s=2.0, retry_s=0.2).start()
    assert wait_until(lambda: pump.delivered >= 300, 120)
    broker.stop()  # mid-drain
    assert wait_until(lambda: pump.failures >= 1, 60)  # the round with the lost PUBACKs has ended
    left = [e.event_id for e in outbox.peek(len(sent))]
    assert 0 < len(left) < len(sent)
    assert left == sent[len(sent) - len(left):]  # a suffix: nothing deleted out of order
    assert len(left) == len(sent) - pump.delivered  # exactly the rows without a PUBACK
    broker.start()
    assert wait_until(lambda: len(outbox) == 0, 180), len(outbox)
    assert inbox.wait_for(len(sent), 120) and inbox.barrier(broker.port)
    assert list(dict.fromkeys(inbox.ids())) == sent  # everything, in order (at least once)
    pump.close(5)
    client.stop()
    inbox.client.stop()


def test_each_puback_frees_a_place_in_the_window_at_once(tmp_path, broker):
    """A rolling window: with 10 events in flight and the broker holding only the first (the link
    lets one PUBLISH through and holds the rest), that one PUBACK sends the 11th at once, while the
    2nd-10th still wait for theirs. Before, the door waited for the whole window's PUBACKs before
    it sent more, and the link idled. Nothing leaves the outbox without its PUBACK; once the link
    lets everything through, every event arrives, in order, once."""
    from delay_proxy import DelayProxy

    inbox = Inbox(broker.port, "inbox-rolling")
    outbox = Outbox(tmp_path / "outbox.db")
    sent = _fill(outbox, DeviceTopics("facelink", "r").decision, 30)
    with DelayProxy(broker.port) as proxy:
        client = MqttClient(MqttSettings(port=proxy.port, publish_window=10), client_id="door-rolling")
        assert client.wait_connected(60)  # no status or discovery messages: only the pump publishes
        proxy.hold_publishes(1)
        pump = OutboxPump(outbox, client, window=10, ack_timeout_s=120).start()
        assert wait_until(lambda: proxy.publishes_held >= 10, 30), proxy.publishes_held  # 2nd-11th
        assert inbox.wait_for(1) and inbox.ids() == sent[:1]
        assert proxy.publishes_held == 10 and pump.delivered == 1  # never more than 10 in flight
        assert [e.event_id for e in outbox.peek(30)][-29:] == sent[1:]  # none deleted without PUBACK
        proxy.release()
        assert wait_until(lambda: len(outbox) == 0, 60), len(outbox)
        pump.close(5)
        client.stop()
    assert inbox.wait_for(30) and inbox.barrier(broker.port)
    assert inbox.ids() == sent
    inbox.client.stop()


def test_an_outbox_error_mid_round_does_not_send_the_events_in_flight_again(tmp_path, broker):
    """Review 98: the rolling window deletes while later events travel, so a delete that fails
    (the outbox locked, disk full) ends a round with events still in flight. They stay the pump's
    own: the next round awaits their PUBACKs and does not publish them a second time while paho
    still has them in flight (before, each of them reached the broker twice)."""
    import sqlite3

    from delay_proxy import DelayProxy

    inbox = Inbox(broker.port, "inbox-midround")
    outbox = Outbox(tmp_path / "outbox.db")
    outbox._conn.execute("PRAGMA busy_timeout = 200")  # a locked outbox fails in 0.2 s, not 10 s
    sent = _fill(outbox, DeviceTopics("facelink", "m").decision, 30)
    other = sqlite3.connect(str(tmp_path / "outbox.db"), isolation_level=None)
    with DelayProxy(broker.port) as proxy:
        client = MqttClient(MqttSettings(port=proxy.port, publish_window=10), client_id="door-midround")
        assert client.wait_connected(60)
        proxy.hold_publishes(5)  # the broker gets 1-5; 6 and after wait in the link
        other.execute("BEGIN IMMEDIATE")  # another writer: deleting 1-5 fails
        pump = OutboxPump(outbox, client, window=10, ack_timeout_s=120, retry_s=0.3).start()
        assert wait_until(lambda: pump.error is not None, 30)
        assert wait_until(lambda: proxy.publishes_held >= 5, 30), proxy.publishes_held  # 6-10 at least
        other.execute("ROLLBACK")
        assert wait_until(lambda: len(outbox) == 25, 30), len(outbox)  # 1-5 deleted, nothing else
        assert wait_until(lambda: pump.error is None, 5), pump.error  # the outbox works again
        # never more than the window in the link: 6 and after are awaited, not published again
        assert not wait_until(lambda: proxy.publishes_held > 10, 2), proxy.publishes_held
        proxy.release()
        assert wait_until(lambda: len(outbox) == 0, 60), len(outbox)
        pump.close(5)
        client.stop()
    other.close()
    assert inbox.wait_for(30) and inbox.barrier(broker.port)
    assert inbox.ids() == sent  # all, in order, none twice
    inbox.client.stop()
