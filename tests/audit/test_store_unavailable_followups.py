"""Follow-ups to review 95 (review 100): the audit logger's acknowledge-only-what-it-stored, with
real mosquitto, a real audit database, a real door outbox and pump and the logger's ``subscribe``.

* A message that goes to the quarantine and was the one held while the database could not store
  was quarantined twice: once when the logger tried it again (``retry_held``), once more when the
  broker sent it again after the session reconnect.
* A JSONL mirror that cannot be written (its disk full, a directory in its place): the decision
  was committed to the database, the mirror write raised, the intake took that for the database
  failing and tried again, found the event id recorded (a "redelivery") and acknowledged it: not
  a word in the log, the event neither in the mirror nor printed on stdout."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading

import paho.mqtt.client as paho
import pytest

from facelink.audit import intake as intake_mod
from facelink.audit import logger as logger_mod
from facelink.audit.store import AuditLog
from facelink.config import load_settings
from tests.audit.test_store_unavailable import (  # noqa: F401 - its fixtures
    CLIENT_ID,
    TOPIC,
    Logger,
    _door_publishes,
    _live,
    _locked,
    _recorded,
    acks,
    publish,
)
from tests.waiting import wait_until

GARBAGE = b'{"schema": "facelink.decision/1", "not": "a decision (review 100)"}'


def _quarantined(db, raw: bytes) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM quarantine WHERE raw = ?", (raw,)).fetchone()[0]
    finally:
        conn.close()


def test_a_held_message_for_the_quarantine_is_quarantined_once(tmp_path, broker, publish, monkeypatch):  # noqa: F811
    if broker.kind != "mosquitto":
        pytest.skip("needs mosquitto's persistent sessions")
    monkeypatch.setattr(intake_mod, "STORE_TRIES", 2)
    monkeypatch.setattr(intake_mod, "STORE_RETRY_S", 0.2)
    monkeypatch.setattr(logger_mod, "RETRY_HELD_S", 0.2)
    db = tmp_path / "audit.db"
    logger = Logger(db, broker.port, monkeypatch)
    try:
        _live(logger, db, publish)
        locker = _locked(db)
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="review100-garbage")
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            pub.publish(TOPIC, GARBAGE, qos=1).wait_for_publish(30)
        finally:
            pub.loop_stop()
            pub.disconnect()
        assert wait_until(lambda: logger.intake.holding, 60)
        locker.execute("COMMIT")
        locker.close()
        assert wait_until(lambda: not logger.intake.holding, 30)
        _live(logger, db, publish)  # published after the reconnect: the redelivered garbage came first
    finally:
        logger.stop()
    assert _quarantined(db, GARBAGE) == 1


def test_a_mirror_that_cannot_be_written_is_said_and_every_decision_still_printed_once(
        tmp_path, broker, acks, capsys, caplog, monkeypatch):  # noqa: F811
    if broker.kind != "mosquitto":
        pytest.skip("needs mosquitto's persistent sessions")
    db = tmp_path / "audit.db"
    mirror = tmp_path / "audit.jsonl"
    mirror.mkdir()  # the mirror cannot be opened for appending (as a full disk: OSError)
    audit = AuditLog(db, mirror)
    stop = threading.Event()
    settings = load_settings(mqtt={"port": broker.port}, audit={"database": db, "client_id": CLIENT_ID})
    thread = threading.Thread(target=logger_mod.subscribe, args=(audit, settings, stop))
    pump = door = outbox = None
    caplog.set_level(logging.WARNING)
    thread.start()
    try:
        ids, outbox, pump, door = _door_publishes(tmp_path, broker.port)
        assert wait_until(lambda: set(ids) <= set(_recorded(db)), 60)
        assert wait_until(lambda: len(outbox) == 0, 30)
    finally:
        if pump is not None:
            pump.close(1.0)
            door.stop()
            outbox.close()
        stop.set()
        thread.join(30)
        audit.close()
    printed = [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(i for i in printed if i in set(ids)) == sorted(ids), \
        f"{len(set(ids) - set(printed))} of {len(ids)} recorded decisions never printed"
    said = [r for r in caplog.records if r.levelno >= logging.ERROR and "jsonl" in r.getMessage().lower()]
    assert said, "a mirror that cannot be written is not said"
    assert acks == []
