"""Helpers to run the real door daemon as a process and to watch MQTT like a subscriber would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.waiting import round_trip, wait_until

DECISION_LINE = re.compile(r"decision (\w+) user=(\S+) .* event=([0-9a-f-]{36})")


class DoorProcess:
    def __init__(self, tmp: Path, models_dir: Path, port: int, source: str, config: Path | None = None,
                 **settings: str) -> None:
        self.log_path = tmp / "door.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
        env.update({
            "FACELINK_MODELS__MODELS_DIR": str(models_dir), "FACELINK_MODELS__THREADS": "2",
            "FACELINK_STORE__DATABASE": str(tmp / "facelink.db"),
            "FACELINK_MQTT__OUTBOX": str(tmp / "outbox.db"), "FACELINK_MQTT__PORT": str(port),
            "FACELINK_MQTT__HEALTH_INTERVAL_S": "1", "FACELINK_CAMERA__SOURCE": source,
            "PYTHONUNBUFFERED": "1"})
        env.update({f"FACELINK_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = open(self.log_path, "w")
        args = ["--config", str(config)] if config else []
        self.proc = subprocess.Popen([sys.executable, "-m", "facelink.device.main", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def decisions(self) -> list[tuple[str, str, str]]:
        return DECISION_LINE.findall(self.log())

    def wait_for(self, predicate, timeout: float = 60.0) -> bool:
        """``predicate`` came true within ``timeout``; an exited daemon ends the wait early."""
        return wait_until(lambda: predicate() or self.proc.poll() is not None, timeout, interval=0.2) \
            and bool(predicate())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc


class Watcher:
    """A plain MQTT subscriber (persistent session) recording everything it receives."""

    def __init__(self, port: int, topics: list[str], client_id: str = "test-watcher") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def payloads(self, suffix: str) -> list[dict]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def raw(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, predicate, timeout: float = 60.0) -> bool:
        return wait_until(predicate, timeout, interval=0.2)

    def barrier(self, publish: Callable[[str, str], object] | None = None, timeout: float = 60.0) -> bool:
        """Everything published to the broker before this call has reached this watcher: a marker
        published now (``publish(topic, payload)``, e.g. the door's own client; by default this
        watcher's own, which proves its subscriptions are live) came back, and the broker
        forwards one connection's messages in order."""
        if publish is None:
            def publish(topic: str, payload: str) -> object:
                return self.client.publish(topic, payload, qos=1)

        return round_trip(lambda marker: publish("facelink/probe/decision", json.dumps({"probe": marker})),
                          lambda marker: json.dumps({"probe": marker}).encode() in self.raw("probe/decision"),
                          timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def door_daemon(settings, engine, relay=None):
    """The real daemon in this process, on a new database holding the empty collection 'door'."""
    from facelink.device.daemon import Daemon
    from facelink.enroll import faces
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    with Store(settings.store.database) as store:
        faces.create_collection(Context(store, lambda: engine), "door")
    return Daemon(settings, engine=engine, relay=relay)


@pytest.fixture()
def start_door(tmp_path, models_dir):
    """Start the real daemon as a process; whatever a test leaves running is killed afterwards."""
    started: list[DoorProcess] = []

    def start(port: int, source: str, config: Path | None = None, **settings: str) -> DoorProcess:
        door = DoorProcess(tmp_path, models_dir, port, source, config, **settings)
        started.append(door)
        return door

    yield start
    for door in started:
        if door.proc.poll() is None:
            door.stop(signal.SIGKILL, timeout=10)


@pytest.fixture()
def enroll(tmp_path, engine):
    """Enroll people/<name>/<file> as a user of collection 'door' in the door's database."""
    from facelink.enroll import faces, users
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    store = Store(tmp_path / "facelink.db")
    ctx = Context(store, lambda: engine)
    if store.get_collection("door") is None:
        faces.create_collection(ctx, "door")

    def add(faces_dir: Path, name: str, filename: str) -> str:
        if not store.user_exists("door", name):
            users.create_user(ctx, "door", name)
        out = faces.index_faces(ctx, "door", faces_dir / "people" / name / filename, f"{name}-badge",
                                user_id=name)
        return out["FaceRecords"][0]["Face"]["FaceId"]

    yield add
    store.close()
