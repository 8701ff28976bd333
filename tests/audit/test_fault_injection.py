"""Fault injection through a real mosquitto and the real `facelink-logger` process: garbage on the
decision topic is quarantined and acknowledged, and every valid decision around it is recorded."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from facelink.device.decision import GRANTED, Decision
from tests.waiting import round_trip, wait_until

TOPIC = "facelink/front/decision"


class LoggerProcess:
    def __init__(self, tmp: Path, port: int, client_id: str = "audit-test") -> None:
        self.db = tmp / "audit.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
        env.update({"FACELINK_MQTT__PORT": str(port), "FACELINK_AUDIT__CLIENT_ID": client_id,
                    "PYTHONUNBUFFERED": "1"})
        self.log_path = tmp / f"logger-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "facelink.audit.logger", "--db", str(self.db), "run"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self._log)

    def rows(self, sql: str) -> list[tuple]:
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []
        finally:
            conn.close()

    def event_ids(self) -> set[str]:
        return {r[0] for r in self.rows("SELECT event_id FROM decisions")}

    def quarantine(self) -> list[tuple]:
        return self.rows("SELECT topic, reason, size, raw FROM quarantine ORDER BY id")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc


def wait_for(predicate, timeout: float = 120.0) -> bool:
    return wait_until(predicate, timeout, interval=0.2)


def valid(**kw) -> bytes:
    return json.dumps(Decision(GRANTED, "front", "staff", "m/1", 99.0, user_id=kw.get("user", "ann"),
                               similarity=99.5).payload()).encode()


def malformed(i: int) -> bytes:
    good = json.loads(valid())
    kinds = [
        b"42", b"null", b'"a string"', b"[1, 2, 3]", b"true", b"",
        b"\xff\xfe\xfd invalid utf-8", b"{\"event_id\": \"\xc3\x28\"}", b"{broken json",
        json.dumps({**good, "similarity": "99.9"}).encode(),            # wrong type
        json.dumps({**good, "track_id": 1.5}).encode(),
        json.dumps({**good, "decision": 7}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "event_id"}).encode(),  # missing field
        json.dumps({"event_id": str(uuid.uuid4())}).encode(),
        json.dumps({**good, "user_id": None}).encode(),                # GRANTED without a user
        json.dumps({**good, "device_id": "back"}).encode(),            # not the topic's door
        json.dumps({**good, "similarity": float("nan")}).encode(),
        b"[" * 30_000 + b"]" * 30_000,                                 # nesting bomb
    ]
    if i % 100 == 0:
        return b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'             # 1 MB
    return kinds[i % len(kinds)]


@pytest.fixture()
def publisher(broker):
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    yield lambda payload: pub.publish(TOPIC, payload, qos=1).wait_for_publish(30)
    pub.loop_stop()
    pub.disconnect()


def _until_subscribed(logger: LoggerProcess, publish) -> set[str]:
    """Publish probe decisions until one is recorded: the logger's subscription is live. Returns
    the event ids of every probe sent (some may be recorded later)."""
    probes: dict[str, str] = {}  # marker -> the probe decision's event_id

    def send(marker: str) -> None:
        raw = valid(user="probe")
        probes[marker] = json.loads(raw)["event_id"]
        publish(raw)

    assert round_trip(send, lambda marker: probes[marker] in logger.event_ids(), 60), logger.log_path.read_text()
    return set(probes.values())


def test_logger_survives_1000_malformed_messages(tmp_path, broker, publisher):
    if broker.kind != "mosquitto":
        pytest.skip("needs mosquitto")
    logger = LoggerProcess(tmp_path, broker.port)
    try:
        probes = _until_subscribed(logger, publisher)
        sent: set[str] = set()
        bad: list[bytes] = []
        for i in range(1000):
            bad.append(malformed(i))
            publisher(bad[-1])
            if i % 20 == 0:
                raw = valid()
                sent.add(json.loads(raw)["event_id"])
                publisher(raw)
                publisher(raw)  # a redelivery: recorded once
            if i % 100 == 99:  # let a loaded machine's logger catch up: mosquitto queues at most
                assert wait_for(lambda n=i + 1: len(logger.quarantine()) >= n)  # 1,000 per session
        assert wait_for(lambda: len(logger.quarantine()) >= 1000 and sent <= logger.event_ids()), \
            logger.log_path.read_text()[-2000:]
        assert logger.proc.poll() is None  # alive
        raw_late = valid(user="after-the-flood")
        late = json.loads(raw_late)["event_id"]
        publisher(raw_late)
        assert wait_for(lambda: late in logger.event_ids(), 60)
        assert logger.event_ids() - probes == sent | {late}  # every valid decision, nothing else
        assert len(logger.rows("SELECT * FROM decisions")) == len(logger.event_ids())
        quarantined = logger.quarantine()
        assert len(quarantined) == 1000
        assert all(topic == TOPIC and reason for topic, reason, _, _ in quarantined)
        assert [size for _, _, size, _ in quarantined] == [len(b) for b in bad]
        assert [raw for _, _, _, raw in quarantined] == [b[:64 * 1024] for b in bad]  # raw bytes kept
        big = quarantined[0]
        assert big[2] > 1_000_000 and "too large" in big[1]
        reasons = {reason.split(":")[0] for _, reason, _, _ in quarantined}
        assert {"payload too large", "invalid UTF-8 at byte 0", "not JSON", "not a JSON object",
                "schema"} <= reasons
        assert logger.stop() == 0
    finally:
        logger.stop()


def test_redelivered_garbage_after_restart_does_not_stop_the_logger(tmp_path, broker, publisher):
    """Persistent session: what arrives while the logger is down is delivered when it comes back;
    garbage among it is quarantined once (acknowledged), and decisions are recorded."""
    if broker.kind != "mosquitto":
        pytest.skip("needs mosquitto's persistent sessions")
    first = LoggerProcess(tmp_path, broker.port)
    _until_subscribed(first, publisher)
    assert first.stop() == 0
    while_down = [valid(user="early"), b"42", valid(user="late")]
    for raw in while_down:
        publisher(raw)
    expected = {json.loads(while_down[0])["event_id"], json.loads(while_down[2])["event_id"]}
    second = LoggerProcess(tmp_path, broker.port)
    try:
        assert wait_for(lambda: expected <= second.event_ids() and len(second.quarantine()) == 1)
        assert second.quarantine()[0][1] == "not a JSON object: int"
        after = valid(user="next")
        publisher(after)
        assert wait_for(lambda: json.loads(after)["event_id"] in second.event_ids(), 60)
        assert second.proc.poll() is None
    finally:
        assert second.stop() == 0
    third = LoggerProcess(tmp_path, broker.port)  # acknowledged: not delivered again
    try:
        _until_subscribed(third, publisher)  # a redelivery of the session's queue comes before it
        assert len(third.quarantine()) == 1
    finally:
        third.stop()
