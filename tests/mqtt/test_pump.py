"""The pump is the outbox's only drainer: a shutdown with events queued publishes each exactly once."""

from __future__ import annotations

import json
import logging
import threading
import time

from broker import free_port

from facelink.config import MqttSettings
from facelink.mqtt.client import MqttClient, door_client
from facelink.mqtt.outbox import Outbox
from facelink.mqtt.pump import OutboxPump
from facelink.mqtt.topics import DeviceTopics, all_decisions


class Inbox:
    """A subscriber on the real broker that records every decision payload it receives."""

    def __init__(self, port: int, client_id: str) -> None:
        self.received: list[dict] = []
        self._lock = threading.Lock()
        self.client = MqttClient(MqttSettings(port=port), client_id=client_id,
                                 subscriptions=[all_decisions("facelink")], on_message=self._on_message)
        assert self.client.wait_connected(30)
        time.sleep(0.5)  # SUBACK: let the subscription settle before anything is published

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.received.append(json.loads(payload))

    def ids(self) -> list[str]:
        with self._lock:
            return [p["event_id"] for p in self.received]

    def wait_for(self, n: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.ids()) >= n:
                return True
            time.sleep(0.1)
        return False


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
    time.sleep(1.0)  # a duplicate would arrive right behind
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
    port = broker.port
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
        inbox = Inbox(port, "inbox-retry")
        assert client.wait_connected(60)
        deadline = time.monotonic() + 60
        while len(outbox) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(outbox) == 0 and pump.failures == 0
        assert inbox.wait_for(3) and inbox.ids() == sent
    pump.close(5)
    client.stop()
    inbox.client.stop()
