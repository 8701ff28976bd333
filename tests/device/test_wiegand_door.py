"""The door with door.output = "wiegand" (the real daemon, broker, store and gpiozero devices on
gpiozero's mock pins): a GRANTED user's credential goes out on D0/D1; a frame that fails on the
wire after the GRANTED was published is followed by ACTUATION_FAILED when the panel is what opens
the door (it used to be lost in the sender's thread: the audit trail said the door opened), and
recorded beside the GRANTED (facelink.panel/1, send_failed) when the door's own relay opened it
(the panel may have logged another badge for that opening)."""

from __future__ import annotations

import json

from facelink.access.wiegand import Credential, decode
from facelink.audit.intake import Intake
from facelink.audit.store import AuditLog
from facelink.device.decision import GRANTED, Decision
from facelink.device.door import CommandRelay, GpioRelay
from facelink.enroll import credentials, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store

from ..waiting import wait_until
from .conftest import Watcher, door_daemon

D0, D1, RELAY = 23, 24, 17


def _door(tmp_path, broker, make_settings, engine, relay=None):
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)},
                             door={"output": "wiegand"}, wiegand={"d0_pin": D0, "d1_pin": D1})
    daemon = door_daemon(settings, engine, relay)
    daemon.panel.sender.max_gap_us = 1_000_000  # not judged by time here (tests/access/test_wiegand_output.py)
    with Store(settings.store.database) as store:
        ctx = Context(store, lambda: engine)
        users.create_user(ctx, "door", "ann")
        credentials.put_user_credential(ctx, "door", "ann", "H10301:42:7")
    return daemon


def _granted(engine) -> Decision:
    return Decision(GRANTED, "door-1", "door", engine.model_version, 99.0, user_id="ann", similarity=99.8)


def _decisions(watcher: Watcher) -> list[tuple[str, str | None]]:
    return [(d["decision"], d.get("refers_to")) for d in watcher.payloads("door-1/decision")]


def _start(daemon, watcher: Watcher) -> None:
    """Start the daemon's outbox pump; both it and the watcher connected to the broker."""
    daemon.pump.start()
    assert daemon.transport.wait_connected(30)
    assert watcher.barrier(daemon.transport.publish)


def test_a_wiegand_frame_that_fails_is_actuation_failed(tmp_path, broker, make_settings, engine, gpio):
    daemon = _door(tmp_path, broker, make_settings, engine)
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="wiegand-door-watcher")
    try:
        _start(daemon, watcher)
        sent = _granted(engine)
        daemon.emit(sent)
        assert wait_until(lambda: daemon.panel.sender.sent == 1, 10)
        assert [decode(f) for f in gpio.wiegand_frames(D0, D1)] == [Credential("H10301", 42, 7)]
        gpio.gpio(D1).fail_writes = 1
        broken = _granted(engine)
        daemon.emit(broken)
        assert watcher.wait_for(lambda: len(_decisions(watcher)) >= 3, 60)
        assert watcher.barrier(daemon.transport.publish)  # nothing more is on its way
        assert _decisions(watcher) == [("GRANTED", None), ("GRANTED", None), ("ACTUATION_FAILED", broken.event_id)]
        reason = watcher.payloads("door-1/decision")[2]["reason"]
        assert "Wiegand output failed" in reason and "the panel did not get it" in reason
        health = daemon.health()
        assert (health["wiegand_sent"], health["wiegand_failed"], health["wiegand_stuck"]) == (1, 1, None)
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=5)


def test_with_a_relay_of_its_own_a_failed_frame_is_no_actuation_failed(tmp_path, broker, make_settings, engine,
                                                                       gpio):
    """The door's relay opened the door: no ACTUATION_FAILED says the door stayed shut for a panel
    that missed the frame (its record is on the panel topic: the test below)."""
    daemon = _door(tmp_path, broker, make_settings, engine, GpioRelay(RELAY, 0.2))
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="wiegand-relay-watcher")
    try:
        _start(daemon, watcher)
        gpio.gpio(D1).fail_writes = 1
        daemon.emit(_granted(engine))
        assert wait_until(lambda: daemon.panel.sender.failed == 1, 10)  # counted once reported
        relay = [level for _, name, level in gpio.edges if name == f"GPIO{RELAY}"]
        assert relay[-1] is True or relay[-2:] == [True, False]  # the relay released the lock
        assert wait_until(lambda: len(daemon.outbox) == 0, 30)  # whatever was recorded went out
        assert watcher.barrier(daemon.transport.publish)
        assert _decisions(watcher) == [("GRANTED", None)]
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=5)


def test_with_a_relay_of_its_own_a_panel_misread_is_recorded_beside_the_granted(tmp_path, broker, make_settings,
                                                                                engine, gpio):
    """The door's relay opened the door and the frame broke after 26 of its 34 bits, which are
    another valid badge: the panel may have logged someone else's credential for this opening.
    Found in review: that went only to the log. It is recorded beside the GRANTED (facelink.panel/1,
    NO_RESPONSE send_failed, naming the badge the panel may have read) and kept by the audit log
    under the decision's ``panel``; no ACTUATION_FAILED says the door stayed shut."""
    opened = tmp_path / "opened"
    daemon = _door(tmp_path, broker, make_settings, engine, CommandRelay(f"touch {opened}", 5.0))
    with Store(daemon.settings.store.database) as store:
        ctx = Context(store, lambda: engine)
        users.create_user(ctx, "door", "cat")
        credentials.put_user_credential(ctx, "door", "cat", "H10306:64937:58915")
    granted = Decision(GRANTED, "door-1", "door", engine.model_version, 99.0, user_id="cat", similarity=99.8)
    try:
        gpio.fail(52)  # write 53: bit 26's on() (the relay is a command: no GPIO writes of its own)
        daemon.emit(granted)
        assert wait_until(lambda: daemon.panel.sender.failed == 1, 10)  # counted once reported
        assert wait_until(opened.exists, 30)  # the door's relay opened the door
        events = daemon.outbox.peek(100)
        assert [e.topic for e in events] == ["facelink/door-1/decision", "facelink/door-1/panel"]
        record = json.loads(events[1].payload)
        assert (record["schema"], record["decision_event_id"], record["credential"], record["verdict"],
                record["reason"]) == ("facelink.panel/1", granted.event_id, "H10306:64937:58915", "NO_RESPONSE",
                                      "send_failed")
        assert "after 26 of 34 bits" in record["detail"]
        assert "the panel may have read H10301:253:43494 instead" in record["detail"]
        audit = AuditLog(tmp_path / "audit.db")
        intake = Intake(audit)
        for event in events:
            intake.handle(event.topic, event.payload.encode())
        [row] = audit.query(user="cat")
        assert row["decision"] == "GRANTED" and [p["event_id"] for p in row["panel"]] == [record["event_id"]]
        assert audit.query(decision="ACTUATION_FAILED") == []
        audit.close()
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_a_relay_that_fails_beside_a_panel_says_the_panel_may_have_opened(tmp_path, broker, make_settings, engine,
                                                                            gpio):
    """With both outputs, a relay that fails is ACTUATION_FAILED, but the panel was sent the
    credential and may have opened the door on its own: the reason says so (it used to read as
    if the door stayed shut). When the panel did not get the frame either, it does not."""
    daemon = _door(tmp_path, broker, make_settings, engine, GpioRelay(RELAY, 0.2))
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="wiegand-both-watcher")
    try:
        _start(daemon, watcher)
        gpio.gpio(RELAY).fail_writes = 1
        sent = _granted(engine)
        daemon.emit(sent)
        assert wait_until(lambda: daemon.panel.sender.sent == 1, 10)
        assert [decode(f) for f in gpio.wiegand_frames(D0, D1)] == [Credential("H10301", 42, 7)]
        with Store(daemon.settings.store.database) as store:
            credentials.delete_user_credential(Context(store, lambda: engine), "door", "ann")
        gpio.gpio(RELAY).fail_writes = 1
        unsent = _granted(engine)  # ann has no credential now: the panel is sent nothing
        daemon.emit(unsent)
        assert watcher.wait_for(lambda: len(_decisions(watcher)) >= 4, 60)
        assert watcher.barrier(daemon.transport.publish)
        assert _decisions(watcher) == [("GRANTED", None), ("ACTUATION_FAILED", sent.event_id),
                                       ("GRANTED", None), ("ACTUATION_FAILED", unsent.event_id)]
        reasons = [d["reason"] for d in watcher.payloads("door-1/decision")[1::2]]
        assert reasons[0].startswith("the access panel was sent the credential and may have opened the door"), reasons
        assert "gpio" in reasons[0] and "access panel" not in reasons[1] and "gpio" in reasons[1], reasons
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=5)


def test_a_relay_that_fails_after_the_frame_s_report_still_says_the_panel_may_have_opened(
        tmp_path, broker, make_settings, engine, gpio):
    """A review's race: the whole frame went out (only the last bit's release failed: the panel
    reads the badge), its failure was reported first, then a door command failed. The report
    cleared "the panel was told", and the relay's ACTUATION_FAILED read as if the door stayed shut."""
    daemon = _door(tmp_path, broker, make_settings, engine, CommandRelay("sleep 0.5; exit 3", 1.0))
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="wiegand-race-watcher")
    try:
        _start(daemon, watcher)
        gpio.fail(51)  # a 26-bit frame: bit 25's release is its 52nd write
        granted = _granted(engine)
        daemon.emit(granted)
        assert wait_until(lambda: daemon.panel.sender.failed == 1, 10)  # reported before the relay fails
        assert watcher.wait_for(lambda: len(_decisions(watcher)) >= 2, 30)
        assert watcher.barrier(daemon.transport.publish)
        assert [decode(f) for f in gpio.wiegand_frames(D0, D1)] == [Credential("H10301", 42, 7)]
        assert _decisions(watcher) == [("GRANTED", None), ("ACTUATION_FAILED", granted.event_id)]
        reason = watcher.payloads("door-1/decision")[1]["reason"]
        assert reason.startswith("the access panel was sent the credential and may have opened the door"), reason
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=5)


def test_a_frame_on_the_wire_at_shutdown_is_still_reported(tmp_path, broker, make_settings, engine, gpio):
    """SIGTERM while a frame hangs on the wire: the panel is closed before the outbox, and
    close() reports the frame it gave up waiting for, so its ACTUATION_FAILED is flushed with
    the rest (a report from the sender thread after the outbox closed was lost)."""
    daemon = _door(tmp_path, broker, make_settings, engine)
    daemon.panel.sender.JOIN_S = 0.3
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="wiegand-stop-watcher")
    try:
        _start(daemon, watcher)
        gpio.delay(2, 2.0)  # bit 1's on() hangs
        granted = _granted(engine)
        daemon.emit(granted)
        assert daemon.shutdown(flush_timeout_s=10) == 0
        assert watcher.wait_for(lambda: len(_decisions(watcher)) >= 2, 30)
        assert _decisions(watcher) == [("GRANTED", None), ("ACTUATION_FAILED", granted.event_id)]
        assert "still on the wire" in watcher.payloads("door-1/decision")[1]["reason"]
    finally:
        watcher.close()
