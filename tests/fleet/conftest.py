"""Fleet sync fixtures: a desk database with synthetic faces (real SQLite + sqlite-vec), real
Ed25519 keys, a private mosquitto, and an MQTT listener built on facelink's own client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from facelink.config import MqttSettings
from facelink.enroll.store import Store
from facelink.fleet.signing import generate_keypair, load_private, load_trusted
from facelink.mqtt.client import MqttClient
from tests.waiting import round_trip, wait_until

V = "yunet-2023mar+sface-2021dec/int8bq"
PREFIX = "facelink"


def wait_for(predicate, timeout: float = 60.0) -> bool:
    """tests/waiting.py's wait_until with this folder's default deadline (the machine is loaded)."""
    return wait_until(predicate, timeout)


def add_faces(store: Store, collection: str, n: int, user: str | None = None, seed: int = 0) -> list[str]:
    """``n`` faces with random unit embeddings (synthetic), one transaction."""
    vecs = np.random.default_rng(seed).normal(size=(n, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    store.insert_faces([{"face_id": f, "collection_id": collection, "image_id": str(uuid.uuid4()),
                         "user_id": user, "image_sha256": "synthetic", "bounding_box": {"Width": 0.5},
                         "confidence": 99.0, "embedding": v} for f, v in zip(ids, vecs)])
    return ids


class Listener:
    """Subscribes with facelink's MqttClient and records (topic, payload, retained?) in order."""

    def __init__(self, port: int, topics: list[str], client_id: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.probe_topic = f"{PREFIX}/test-probe/{client_id}"
        self.client = MqttClient(MqttSettings(port=port), client_id=client_id,
                                 subscriptions=[*topics, self.probe_topic], on_message=self._on)
        self.wait_live()

    def wait_live(self, timeout: float = 60.0) -> None:
        """Connected and subscribed: a probe published now comes back. After a broker restart the
        client reconnects (CONNACK) before its SUBSCRIBE is through; a message published in that gap
        never reaches it, so a test that restarts the broker calls this again before publishing."""
        assert self.client.wait_connected(timeout)
        assert round_trip(lambda probe: self.client.publish(self.probe_topic, probe, qos=1),
                          lambda probe: (self.probe_topic, probe.encode()) in self.snapshot(),
                          timeout), "subscription never became live"

    def _on(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.messages.append((topic, payload))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p in self.snapshot() if t == topic]

    def close(self) -> None:
        self.client.stop()


@pytest.fixture()
def keys(tmp_path):
    generate_keypair(tmp_path / "keys/desk.key", tmp_path / "keys/desk.pub")
    return load_private(tmp_path / "keys/desk.key"), load_trusted([tmp_path / "keys/desk.pub"]), \
        tmp_path / "keys/desk.key"


@pytest.fixture()
def desk_db(tmp_path) -> Path:
    return tmp_path / "desk" / "facelink.db"


@pytest.fixture()
def listeners(broker):
    made: list[Listener] = []

    def make(topics: list[str], client_id: str) -> Listener:
        made.append(Listener(broker.port, topics, client_id))
        return made[-1]

    yield make
    for m in made:
        m.close()


class DeskProcess:
    """`facelink fleet publish` as a real process (the desk service), logging to ``log_path``."""

    def __init__(self, workdir: Path, port: int, database: Path, signing_key: Path | None,
                 collections: list[str], doors: list[str] | None = None, **settings: str) -> None:
        """``doors``: fleet.doors, each door listed for all of ``collections``."""
        self.log_path = workdir / "desk-publish.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
        env.update({"FACELINK_STORE__DATABASE": str(database), "FACELINK_MQTT__PORT": str(port),
                    "FACELINK_FLEET__PUBLISH": json.dumps(collections), "PYTHONUNBUFFERED": "1"})
        if signing_key is not None:
            env["FACELINK_FLEET__SIGNING_KEY"] = str(signing_key)
        if doors is not None:
            env["FACELINK_FLEET__DOORS"] = json.dumps({d: collections for d in doors})
        env.update({f"FACELINK_{k.upper()}": str(v) for k, v in settings.items()})
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "facelink.enroll.cli", "fleet", "publish"],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc


@pytest.fixture()
def start_desk(tmp_path):
    """``start_desk(port, database, signing_key, ["C"], ["door-1"], fleet__heartbeat_s="1")``: the desk's
    publisher as a process; whatever a test leaves running is killed afterwards."""
    started: list[DeskProcess] = []

    def start(port: int, database: Path, signing_key: Path | None, collections: list[str],
              doors: list[str] | None = None, **settings: str) -> DeskProcess:
        started.append(DeskProcess(tmp_path / f"desk-{len(started)}", port, database, signing_key,
                                   collections, doors, **settings))
        return started[-1]

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL, timeout=10)
