"""The logger's persistent session: what the doors deliver while the logger is down reaches it when
it is back. A door deletes a decision from its outbox on the broker's PUBACK, so anything the broker
then drops for the offline logger is gone from every copy. The broker runs with the settings the
README gives for the logger's broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from broker import Broker

from facelink.config import MqttSettings
from facelink.device.decision import GRANTED, Decision
from facelink.mqtt.client import door_client
from facelink.mqtt.outbox import Outbox
from facelink.mqtt.pump import OutboxPump
from facelink.mqtt.topics import DeviceTopics
from tests.audit.test_fault_injection import LoggerProcess, _until_subscribed
from tests.waiting import wait_until

N = 1_200  # a few hours of one busy door, or minutes of a building's
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_broker_settings() -> str:
    """The README's ``# mosquitto.conf for facelink-logger`` block (what the harness sets itself,
    the listener and the persistence lines, left out)."""
    m = re.search(r"```\n# mosquitto.conf for facelink-logger\n(.*?)```", README.read_text(), re.S)
    lines = m.group(1).splitlines() if m else []
    return "".join(f"{line}\n" for line in lines if line.strip() and not line.startswith(("#", "listener", "persistence")))


@pytest.fixture()
def logger_broker(tmp_path):
    b = Broker(tmp_path / "broker", mosquitto_extra=readme_broker_settings()).start()
    yield b
    b.stop()


@pytest.fixture()
def publisher(logger_broker):
    import paho.mqtt.client as mqtt

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe-publisher")
    pub.connect("127.0.0.1", logger_broker.port)
    pub.loop_start()
    yield lambda payload: pub.publish("facelink/front/decision", payload, qos=1).wait_for_publish(30)
    pub.loop_stop()
    pub.disconnect()


def test_decisions_made_while_the_logger_is_down_are_all_recorded(tmp_path, logger_broker, publisher):
    if logger_broker.kind != "mosquitto":
        pytest.skip("needs mosquitto's persistent sessions")
    first = LoggerProcess(tmp_path, logger_broker.port)
    probes = _until_subscribed(first, publisher)
    assert first.stop() == 0
    outbox = Outbox(tmp_path / "outbox.db")
    topic = DeviceTopics("facelink", "front").decision
    sent = set()
    for i in range(N):
        p = Decision(GRANTED, "front", "staff", "m/1", 99.0, user_id=f"u{i}", similarity=99.5).payload()
        outbox.put(p["event_id"], topic, p)
        sent.add(p["event_id"])
    client = door_client(MqttSettings(port=logger_broker.port, device_id="front"))
    pump = OutboxPump(outbox, client, retry_s=0.2).start()
    try:
        assert wait_until(lambda: len(outbox) == 0, 120)  # every one PUBACKed and deleted at the door
    finally:
        pump.close(1.0)
        client.stop()
        outbox.close()
    second = LoggerProcess(tmp_path, logger_broker.port)
    try:
        probes |= _until_subscribed(second, publisher)  # the session's queue is delivered before the probe
        missing = sent - second.event_ids()
        assert not missing, f"{len(missing)} of {N} decisions lost (PUBACKed to the door, never recorded)"
        assert second.event_ids() - probes == sent
    finally:
        second.stop()
