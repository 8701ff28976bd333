"""The pump is the outbox's only drainer: a shutdown with events queued publishes each exactly once."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from broker import free_port

from facelink.config import MqttSettings
from facelink.mqtt.client import MqttClient, door_client
from facelink.mqtt.outbox import Outbox
from facelink.mqtt.pump import OutboxPump
from facelink.mqtt.topics import DeviceTopics, all_decisions
from tests.waiting import round_trip, wait_until


class Inbox:
    """A subscriber on the real broker that records every decision payload it receives."""

    def __init__(self, port: int, client_id: str, *, clean_session: bool = True) -> None:
        self.received: list[dict] = []
        self._lock = threading.Lock()
        self.client = MqttClient(MqttSettings(port=port), client_id=client_id, clean_session=clean_session,
                                 subscriptions=[all_decisions("facelink")], on_message=self._on_message)
        assert self.client.wait_connected(30)
        assert self.barrier(port)  # the subscription is live before anything is published

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.received.append(json.loads(payload))

    def ids(self) -> list[str]:
        with self._lock:
            return [p["event_id"] for p in self.received if "probe" not in p]

    def barrier(self, port: int, timeout: float = 30.0) -> bool:
        """Probes published now (by another client) came back: the subscription is live, and
        whatever the broker got before them has been delivered to this inbox."""
        probe = MqttClient(MqttSettings(port=port), client_id=f"probe-{id(self)}")
        try:
            assert probe.wait_connected(30)
            return round_trip(lambda marker: probe.publish("facelink/probe/decision", json.dumps({"probe": marker})),
                              lambda marker: any(p.get("probe") == marker for p in self._snapshot()), timeout)
        finally:
            probe.stop()

    def _snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.received)

    def wait_for(self, n: int, timeout: float = 60.0) -> bool:
        return wait_until(lambda: len(self.ids()) >= n, timeout, interval=0.1)


def _fill(outbox: Outbox, topic: str, n: int) -> list[str]:
    ids = [f"ev-{i:04d}" for i in range(n)]
    for i, event_id in enumerate(ids):
        outbox.put(event_id, topic, {"event_id": event_id, "i": i})
    return ids


def test_shutdown_with_queued_events_publishes_each_once(tmp_path, broker):
    """Item 7: SIGTERM used to flush on the main thread while the pump thread was draining."""
    inbox = Inbox(broker.port, "inbox-once")
    settings = MqttSettings(port=broker.port, device_id="pump-door")
    outbox = Outbox(tmp_path / "outbox.db")
    sent = _fill(outbox, DeviceTopics("facelink", "pump-door").decision, 300)
    client = door_client(settings)
    assert client.wait_connected(30)
    pump = OutboxPump(outbox, client).start()
    left = pump.close(60)  # what Daemon.shutdown does, with the pump mid-drain
    client.stop()
    assert left == 0 and len(outbox) == 0
    assert inbox.wait_for(300)
    assert inbox.barrier(broker.port)  # a duplicate would have arrived before the probe
    got = inbox.ids()
    assert got == sent  # every event, exactly once, in order
    inbox.client.stop()


def test_close_while_broker_is_away_keeps_events(tmp_path):
    """Nothing to drain to: close returns at once and the outbox keeps every event for the next start."""
    outbox = Outbox(tmp_path / "outbox.db")
    _fill(outbox, "facelink/d/decision", 5)
    client = door_client(MqttSettings(port=free_port(), device_id="d"))
    pump = OutboxPump(outbox, client).start()
    assert pump.close(5) == 5
    client.stop()
    again = Outbox(tmp_path / "outbox.db")
    assert [e.event_id for e in again.peek(10)] == [f"ev-{i:04d}" for i in range(5)]


def test_publish_failures_are_retried_and_logged_once_per_period(tmp_path, broker, caplog):
    """A broker that is away: the pump keeps retrying (no event lost), says so in the log once per
    period rather than on every attempt, and delivers everything once the broker is back."""
    if broker.kind != "mosquitto":  # amqtt does not keep a persistent session across its restart
        pytest.skip("needs mosquitto's persistent sessions (the inbox's queue survives the restart)")
    port = broker.port
    # subscribed before the outage with a persistent session: the broker queues for it whatever
    # the door publishes on reconnecting, even before the inbox itself is back (no race)
    inbox = Inbox(port, "inbox-retry", clean_session=False)
    broker.stop()
    outbox = Outbox(tmp_path / "outbox.db")
    sent = _fill(outbox, DeviceTopics("facelink", "d").decision, 3)
    client = door_client(MqttSettings(port=port, device_id="d"))
    with caplog.at_level(logging.WARNING, logger="facelink.mqtt.pump"):
        pump = OutboxPump(outbox, client, retry_s=0.05, warn_every_s=3600).start()
        deadline = time.monotonic() + 30
        while pump.failures < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pump.failures >= 20 and len(outbox) == 3
        warnings = [r for r in caplog.records if r.name == "facelink.mqtt.pump"]
        assert len(warnings) == 1 and "broker unreachable" in warnings[0].getMessage()
        broker.start()
        assert client.wait_connected(60)
        deadline = time.monotonic() + 60
        while len(outbox) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(outbox) == 0 and pump.failures == 0
        assert inbox.wait_for(3) and inbox.ids() == sent
    pump.close(5)
    client.stop()
    inbox.client.stop()


def test_a_window_in_flight_is_deleted_only_after_its_pubacks(tmp_path, broker):
    """Window 100 over a link whose PUBACKs are held back: the broker has the first events while
    every one of them is still in the outbox; the link is cut (the PUBACKs are lost), nothing is
    lost, and after it comes back everything arrives, in order, and the outbox empties."""
    from delay_proxy import DelayProxy

    inbox = Inbox(broker.port, "inbox-window")
    outbox = Outbox(tmp_path / "outbox.db")
    sent = _fill(outbox, DeviceTopics("facelink", "w").decision, 250)
    with DelayProxy(broker.port) as proxy:
        client = door_client(MqttSettings(port=proxy.port, device_id="w", keepalive_s=60))
        assert client.wait_connected(60)
        proxy.delay_down_s = 30.0  # broker -> door: PUBACKs held back 30 s from now on
        pump = OutboxPump(outbox, client, window=100, ack_timeout_s=120).start()
        assert inbox.wait_for(100)  # the whole first window reached the broker...
        assert len(outbox) == 250  # ...and none of it left the outbox: no PUBACK yet
        proxy.refuse = True
        proxy.drop_connections()  # the link fails with the PUBACKs in the delay line
        assert wait_until(lambda: not client.is_connected(), 30)
        assert len(outbox) == 250
        proxy.delay_down_s = 0.0
        proxy.refuse = False
        assert wait_until(lambda: len(outbox) == 0, 120), len(outbox)
        pump.close(5)
        client.stop()
    # the broker acknowledged every event (the outbox is empty): once the barrier's probe is back,
    # all of them reached the inbox (counting ids alone would count the cut window's duplicates)
    assert inbox.barrier(broker.port)
    firsts = list(dict.fromkeys(inbox.ids()))
    assert firsts == sent  # every event, in order (the cut window may arrive twice: at least once)
    inbox.client.stop()


def test_an_outbox_that_fails_is_retried_and_said_and_the_pump_goes_on(tmp_path, broker):
    """The outbox's delete fails (another process holds the database's write lock past the
    10 s busy timeout: "database is locked", as a full disk fails it): the pump thread goes on,
    health's ``error`` says why while it lasts, only the delete of what the broker acknowledged is
    retried (not the publishes: each event arrives once), and decisions made after the outbox
    recovered are delivered. Before, one such error
    ended the pump thread: nothing more was published until a restart."""
    import sqlite3

    inbox = Inbox(broker.port, "inbox-outbox-fails")
    settings = MqttSettings(port=broker.port, device_id="pump-door")
    topic = DeviceTopics("facelink", "pump-door").decision
    outbox = Outbox(tmp_path / "outbox.db")
    first = _fill(outbox, topic, 3)
    holder = sqlite3.connect(str(tmp_path / "outbox.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock: reads (peek) go on, the pump's delete cannot
    client = door_client(settings)
    assert client.wait_connected(30)
    pump = OutboxPump(outbox, client, retry_s=0.2).start()
    try:
        assert wait_until(lambda: pump.error is not None, 60)  # published, then the delete timed out
        assert "database is locked" in pump.error and pump._thread.is_alive()
        holder.execute("ROLLBACK")
        outbox.put("after", topic, {"event_id": "after"})
        assert wait_until(lambda: len(outbox) == 0, 60)
        assert inbox.wait_for(4)
        assert wait_until(lambda: pump.error is None, 30)  # cleared by the round that worked
        assert inbox.barrier(broker.port)  # a late duplicate would have arrived before the probe
        # delivered once each: only the failed delete was retried, not the publishes
        assert inbox.ids() == first + ["after"]
    finally:
        holder.close()
        pump.close(5)
        client.stop()
        inbox.client.stop()


def test_a_flush_while_the_outbox_fails_publishes_nothing_twice_and_ends(tmp_path, broker):
    """Shutdown while the outbox's delete keeps failing: close() ends by its deadline, says how
    many events stay, and the flush retries the delete only (it used to re-publish the window in
    a loop until the deadline)."""
    import sqlite3

    inbox = Inbox(broker.port, "inbox-flush-fails")
    settings = MqttSettings(port=broker.port, device_id="pump-door")
    outbox = Outbox(tmp_path / "outbox.db")
    sent = _fill(outbox, DeviceTopics("facelink", "pump-door").decision, 3)
    holder = sqlite3.connect(str(tmp_path / "outbox.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the delete cannot happen while this is held
    client = door_client(settings)
    assert client.wait_connected(30)
    pump = OutboxPump(outbox, client, retry_s=0.2).start()
    try:
        assert wait_until(lambda: pump.error is not None, 60)  # published once, the delete failed
        assert pump.close(3) == 3  # the flush ends (after one more 10 s busy wait), nothing deleted
        assert not pump._thread.is_alive()
        assert inbox.barrier(broker.port)
        assert inbox.ids() == sent  # each once: the flush did not publish them again
    finally:
        holder.close()
        client.stop()
        inbox.client.stop()


def test_an_outbox_that_fails_at_once_is_retried_every_retry_s_not_in_a_spin(tmp_path, broker):
    """Every outbox call raises at once (its connection is gone): the pump waits retry_s between
    rounds while running and while flushing (a flush used to spin: millions of calls a second),
    close() ends by its deadline and says the count is unknown (-1), and no thread is left."""
    outbox = Outbox(tmp_path / "outbox.db")
    _fill(outbox, DeviceTopics("facelink", "pump-door").decision, 3)
    client = door_client(MqttSettings(port=broker.port, device_id="pump-door"))
    assert client.wait_connected(30)
    pump = OutboxPump(outbox, client, retry_s=0.2)
    outbox.close()  # from now on every read and delete raises
    pump.start()
    try:
        assert wait_until(lambda: pump.outbox_failures >= 3, 30) and pump.error is not None
        before, started = pump.outbox_failures, time.monotonic()
        assert pump.close(2) == -1
        took = time.monotonic() - started
        assert took < 15 and not pump._thread.is_alive()
        assert pump.outbox_failures - before <= took / 0.2 + 3  # one failed round per retry_s, no spin
    finally:
        client.stop()


def test_stopping_deletes_what_the_broker_already_acknowledged(tmp_path, broker):
    """The delete failed, then the door stops with no time left to publish: the delivered events
    are still deleted on the way out (it needs the disk, not the broker), so the next start does
    not send them again."""
    import sqlite3

    inbox = Inbox(broker.port, "inbox-stop-deletes")
    outbox = Outbox(tmp_path / "outbox.db")
    sent = _fill(outbox, DeviceTopics("facelink", "pump-door").decision, 3)
    holder = sqlite3.connect(str(tmp_path / "outbox.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    client = door_client(MqttSettings(port=broker.port, device_id="pump-door"))
    assert client.wait_connected(30)
    pump = OutboxPump(outbox, client, retry_s=600).start()  # after the failure it waits for close()
    try:
        assert wait_until(lambda: pump.error is not None, 60)
        holder.execute("ROLLBACK")
        assert pump.close(0) == 0  # no time to publish anything; the acknowledged three are deleted
        assert inbox.barrier(broker.port)
        assert inbox.ids() == sent
    finally:
        holder.close()
        client.stop()
        inbox.client.stop()
