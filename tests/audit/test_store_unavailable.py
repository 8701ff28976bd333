"""Review 95: the audit database cannot store (another writer holds its write lock past the
connection's 5-second busy timeout: `facelink-logger requeue`, `acknowledge`, an sqlite3 shell; disk
full; an I/O error). Before, the exception escaped the intake, the client logged it and paho
acknowledged the message anyway: the door had deleted it on the broker's PUBACK, so the event was
gone. Now the logger acknowledges only what it stored; the broker keeps the rest, and sends it
again once the database stores again. Real mosquitto, real audit database, a real door outbox and
pump, the logger's own ``subscribe``."""

from __future__ import annotations

import json
import sqlite3
import threading

import paho.mqtt.client as paho
import pytest

from facelink.audit import intake as intake_mod
from facelink.audit import logger as logger_mod
from facelink.audit.store import AuditLog
from facelink.config import MqttSettings, load_settings
from facelink.device.decision import GRANTED, Decision
from facelink.mqtt.client import MqttClient, door_client
from facelink.mqtt.outbox import Outbox
from facelink.mqtt.pump import OutboxPump
from facelink.mqtt.topics import DeviceTopics
from tests.waiting import round_trip, wait_until

TOPIC = DeviceTopics("facelink", "front").decision
CLIENT_ID = "audit-review95"
N = 30  # more than mosquitto's in-flight limit (20): the rest waits queued at the broker


def _decision(user: str) -> dict:
    return Decision(GRANTED, "front", "staff", "m/1", 99.0, user_id=user, similarity=99.5).payload()


def _recorded(db) -> dict[str, int]:
    """event id -> how many rows name it (decisions and the logger's own ``received`` clock)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT event_id FROM decisions UNION ALL SELECT event_id FROM received").fetchall()
    finally:
        conn.close()
    counts: dict[str, int] = {}
    for (event_id,) in rows:
        counts[event_id] = counts.get(event_id, 0) + 1
    return counts


class Logger:
    """``subscribe`` in a thread, as `facelink-logger run` runs it; its Intake at hand."""

    def __init__(self, db, port: int, monkeypatch) -> None:
        self.audit = AuditLog(db)
        self.stop_event = threading.Event()
        made: list = []
        real = logger_mod.Intake

        def make(*args, **kwargs):
            made.append(real(*args, **kwargs))
            return made[-1]

        monkeypatch.setattr(logger_mod, "Intake", make)
        settings = load_settings(mqtt={"port": port}, audit={"database": db, "client_id": CLIENT_ID})
        self.thread = threading.Thread(target=logger_mod.subscribe, args=(self.audit, settings, self.stop_event))
        self.thread.start()
        assert wait_until(lambda: made, 10)
        self.intake = made[0]

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.audit.close()


@pytest.fixture()
def acks(tmp_path, monkeypatch):
    """Every PUBACK the logger's client sends, checked when sent: the event must be in the database
    then. Returns the list of event ids acknowledged while not stored."""
    db = tmp_path / "audit.db"
    mids: dict[int, str] = {}
    unstored: list[str] = []
    real_on_message = MqttClient._on_message
    real_puback = paho.Client._send_puback

    def on_message(self, client, userdata, msg):
        if self.client_id == CLIENT_ID:
            mids[msg.mid] = json.loads(msg.payload)["event_id"]
        return real_on_message(self, client, userdata, msg)

    def send_puback(self, mid):
        if self._client_id == CLIENT_ID.encode() and mids.get(mid) not in _recorded(db):
            unstored.append(mids.get(mid, f"mid {mid}"))
        return real_puback(self, mid)

    monkeypatch.setattr(MqttClient, "_on_message", on_message)
    monkeypatch.setattr(paho.Client, "_send_puback", send_puback)
    monkeypatch.setattr(intake_mod, "STORE_TRIES", 2, raising=False)
    monkeypatch.setattr(intake_mod, "STORE_RETRY_S", 0.2, raising=False)
    monkeypatch.setattr(logger_mod, "RETRY_HELD_S", 0.2, raising=False)
    return unstored


@pytest.fixture()
def publish(broker):
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="review95-probe")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    yield lambda payload: pub.publish(TOPIC, json.dumps(payload), qos=1).wait_for_publish(30)
    pub.loop_stop()
    pub.disconnect()


def _live(logger: Logger, db, publish) -> None:
    """The logger's subscription is live (a probe decision recorded)."""
    sent: dict[str, str] = {}

    def send(marker: str) -> None:
        sent[marker] = _decision(marker)
        publish(sent[marker])

    assert round_trip(send, lambda marker: sent[marker]["event_id"] in _recorded(db), timeout=30)


def _door_publishes(tmp_path, port: int) -> tuple[list[str], Outbox, OutboxPump, MqttClient]:
    outbox = Outbox(tmp_path / "outbox.db")
    ids = []
    for i in range(N):
        p = _decision(f"u{i}")
        outbox.put(p["event_id"], TOPIC, p)
        ids.append(p["event_id"])
    client = door_client(MqttSettings(port=port, device_id="front"))
    return ids, outbox, OutboxPump(outbox, client, retry_s=0.2).start(), client


def _locked(db) -> sqlite3.Connection:
    """Another writer holding the audit database's write lock (as an sqlite3 shell's BEGIN IMMEDIATE)."""
    locker = sqlite3.connect(str(db), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    return locker


def test_events_the_database_cannot_store_wait_at_the_broker_and_are_recorded_once(
        tmp_path, broker, acks, publish, capsys, monkeypatch):
    if broker.kind != "mosquitto":
        pytest.skip("needs mosquitto's persistent sessions")
    db = tmp_path / "audit.db"
    logger = Logger(db, broker.port, monkeypatch)
    pump = door = outbox = None
    try:
        _live(logger, db, publish)
        locker = _locked(db)
        ids, outbox, pump, door = _door_publishes(tmp_path, broker.port)
        # every event PUBACKed by the broker and deleted at the door; the logger cannot store them
        assert wait_until(lambda: len(outbox) == 0, 60)
        # the logger gave up storing (before review 95: it acknowledged the message it could not store)
        assert wait_until(lambda: getattr(logger.intake, "holding", False) or acks, 30)
        assert not set(ids) & set(_recorded(db))
        locker.execute("COMMIT")  # the other writer is done
        locker.close()
        assert wait_until(lambda: set(ids) <= set(_recorded(db)), 60), \
            f"{len(set(ids) - set(_recorded(db)))} of {N} events lost (PUBACKed by the broker, never recorded)"
        assert wait_until(lambda: not logger.intake.holding, 10)
    finally:
        if pump is not None:
            pump.close(1.0)
            door.stop()
            outbox.close()
        logger.stop()
    counts = _recorded(db)
    assert all(counts[i] == 2 for i in ids)  # one decision row and one received row each
    printed = [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(i for i in printed if i in set(ids)) == sorted(ids)  # each new record once
    assert acks == [], f"acknowledged while not stored: {acks}"


def test_a_logger_stopped_while_the_database_cannot_store_acknowledges_nothing_unstored(
        tmp_path, broker, acks, publish, monkeypatch):
    if broker.kind != "mosquitto":
        pytest.skip("needs mosquitto's persistent sessions")
    db = tmp_path / "audit.db"
    logger = Logger(db, broker.port, monkeypatch)
    pump = door = outbox = None
    try:
        _live(logger, db, publish)
        locker = _locked(db)
        ids, outbox, pump, door = _door_publishes(tmp_path, broker.port)
        assert wait_until(lambda: len(outbox) == 0, 60)
        assert wait_until(lambda: logger.intake.holding, 30)
    finally:
        if pump is not None:
            pump.close(1.0)
            door.stop()
            outbox.close()
        logger.stop()  # still failing
    locker.execute("COMMIT")
    locker.close()
    assert not set(ids) & set(_recorded(db))
    second = Logger(db, broker.port, monkeypatch)  # the same session: the broker sends them all
    try:
        assert wait_until(lambda: set(ids) <= set(_recorded(db)), 60), \
            f"{len(set(ids) - set(_recorded(db)))} of {N} events lost at the logger's stop"
    finally:
        second.stop()
    assert acks == [], f"acknowledged while not stored: {acks}"


def test_a_message_the_database_refuses_for_its_content_is_quarantined_not_held(tmp_path):
    """A constraint that refuses one message (here a trigger a site added; equally a value the
    database cannot bind) is that message's fault, not the database's: before, every sqlite3 error
    held the logger, so one such message kept every later one of every door at the broker for
    good. Now it is quarantined (raw bytes kept) and the next message is recorded."""
    db = tmp_path / "audit.db"
    audit = AuditLog(db)
    site = sqlite3.connect(db)  # the site's own change to the database, from another connection
    site.execute("CREATE TRIGGER refuse_mallory BEFORE INSERT ON decisions WHEN NEW.user_id = 'mallory' "
                 "BEGIN SELECT RAISE(ABORT, 'refused by a site trigger'); END")
    site.commit()
    site.close()
    intake = intake_mod.Intake(audit)
    intake.handle(TOPIC, json.dumps(_decision("mallory")).encode())
    assert not intake.holding and intake.quarantined == 1 and intake.recorded == 0
    ok = _decision("alice")
    intake.handle(TOPIC, json.dumps(ok).encode())
    assert not intake.holding and intake.recorded == 1
    audit.close()
    assert _recorded(db) == {ok["event_id"]: 2}  # the decision and its received_at row
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (reason,) = conn.execute("SELECT reason FROM quarantine").fetchone()
    finally:
        conn.close()
    assert "IntegrityError" in reason
