"""`facelink fleet status` (the real command) against a real mosquitto: doors online and offline,
their applied seq against the desk's signed head, outbox depth; forged heads and garbage health
are ignored, never reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from facelink.config import MqttSettings
from facelink.fleet.protocol import Head, encode_head
from facelink.fleet.signing import generate_keypair, load_private
from facelink.mqtt.client import MqttClient, Will
from facelink.mqtt.topics import CollectionTopics, DeviceTopics

from .conftest import PREFIX, V


class SimDoor:
    """A door's MQTT footprint: retained online / Will offline, health every 0.2 s."""

    def __init__(self, port: int, device_id: str, health: dict) -> None:
        self.t = DeviceTopics(PREFIX, device_id)
        self.health = health
        self.client = MqttClient(MqttSettings(port=port), client_id=f"sim-{device_id}", will=Will(self.t.status))
        assert self.client.wait_connected(30)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stop_event.wait(0.2):
            self.client.publish(self.t.health, json.dumps(self.health), qos=0)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        self.client.stop()  # publishes the Will's "offline", retained


def test_status_reports_every_door_against_the_signed_head(tmp_path, broker, keys):
    key, _, key_path = keys
    generate_keypair(tmp_path / "evil.key", tmp_path / "evil.pub")
    t = CollectionTopics(PREFIX, "staff")
    desk = MqttClient(MqttSettings(port=broker.port), client_id="sim-desk")
    assert desk.wait_connected(30)
    forged = Head(collection_id="visitors", face_model_version=V, seq=99, issued_at=2.0)
    visitors = CollectionTopics(PREFIX, "visitors")
    assert desk.publish(visitors.head, encode_head(load_private(tmp_path / "evil.key"), forged).decode(),
                        retain=True)  # signed by a key the desk does not trust
    head = Head(collection_id="staff", face_model_version=V, seq=7, issued_at=1.0)
    assert desk.publish(t.head, encode_head(key, head).decode(), retain=True)
    assert desk.publish(f"{PREFIX}/door-x/health", "not json", retain=True)  # garbage: ignored
    up = SimDoor(broker.port, "door-1", {"outbox_depth": 4, "sync": {"staff": {"applied_seq": 5, "stale": False}}})
    gone = SimDoor(broker.port, "door-2", {"outbox_depth": 0, "sync": {"staff": {"applied_seq": 7}}})
    gone.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
    env.update({"FACELINK_MQTT__PORT": str(broker.port), "FACELINK_FLEET__SIGNING_KEY": str(key_path),
                "FACELINK_STORE__DATABASE": str(tmp_path / "no-desk-db-here.db")})
    out = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "fleet", "status", "--deadline-s", "3"],
                         env=env, capture_output=True, text=True, timeout=120)
    up.stop()
    desk.stop()
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    doors = {d["DeviceId"]: d for d in report["Doors"]}
    assert report["DeskHeads"] == {"staff": 7}  # the forged head (visitors, seq 99) is not believed
    assert report["Ignored"] >= 2  # the forged head and the garbage health
    one = doors["door-1"]
    assert one["Status"] == "online" and one["OutboxDepth"] == 4 and one["SecondsSinceSeen"] < 3
    assert one["Collections"]["staff"] == {"AppliedSeq": 5, "HeadSeq": 7, "Behind": 2, "Stale": False}
    assert doors["door-2"]["Status"] == "offline"
    assert "door-x" not in doors


def test_status_counts_unparseable_heads_and_health_as_ignored(tmp_path, broker, keys):
    """Heads and health the JSON parser itself cannot take (nested deeper than it recurses; a
    payload with a lone surrogate) are counted under Ignored like any garbage: no traceback."""
    desk = MqttClient(MqttSettings(port=broker.port), client_id="sim-desk")
    assert desk.wait_connected(30)
    deep = "[" * 30_000 + "]" * 30_000
    surrogate = '{"payload": "\\ud800", "signature": {}}'
    for topic, payload in ((CollectionTopics(PREFIX, "a").head, deep), (CollectionTopics(PREFIX, "b").head, surrogate),
                           (f"{PREFIX}/door-deep/health", deep)):
        assert desk.publish(topic, payload, retain=True)
    desk.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
    env.update({"FACELINK_MQTT__PORT": str(broker.port), "FACELINK_FLEET__SIGNING_KEY": str(keys[2]),
                "FACELINK_STORE__DATABASE": str(tmp_path / "no-desk-db-here.db")})
    out = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "fleet", "status", "--deadline-s", "2"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["Ignored"] == 3 and report["Doors"] == [] and report["DeskHeads"] == {}, report
    assert "Traceback" not in out.stderr and "handler failed" not in out.stderr


def test_a_door_that_cannot_read_its_outbox_shows_its_depth_as_unknown():
    """Health with outbox_depth None (the door's outbox cannot be read) replaces the last depth
    with unknown; it used to keep showing the last figure as if it were current."""
    from facelink.fleet.status import DoorSeen, _health

    door = DoorSeen("door-1")
    assert _health(door, json.dumps({"outbox_depth": 4}).encode()) and door.outbox_depth == 4
    assert _health(door, json.dumps({"outbox_depth": None, "outbox_error": "OperationalError: disk I/O error"}).encode())
    assert door.outbox_depth is None
