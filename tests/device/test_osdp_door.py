"""The real door daemon as an OSDP reader: a libosdp Control Panel (the access panel) on a pty,
secure channel on, receives the granted user's badge; an unknown face sends nothing; the panel's
green LED is recorded as its verdict beside FaceLink's decision on MQTT; a panel that opens the
door while the daemon stops still opens it."""

from __future__ import annotations

import json
import os
import shutil
import threading
from contextlib import contextmanager

import pytest

from facelink.access.scbk import save_scbk
from facelink.access.wiegand import Credential
from facelink.device.door import CommandRelay
from facelink.enroll import credentials
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.mqtt.schema import PanelVerdictMessage
from tests.waiting import wait_until

from .conftest import Watcher, door_daemon

KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")


def test_granted_face_becomes_a_card_read_at_the_panel(tmp_path, broker, faces_dir, enroll, engine, start_door):
    panel_mod = pytest.importorskip("tests.access.panel")
    enroll(faces_dir, "feat_man", "photo.jpg")
    enroll(faces_dir, "obama", "1.jpg")
    with Store(tmp_path / "facelink.db") as store:
        ctx = Context(store, lambda: engine)
        credentials.put_user_credential(ctx, "door", "feat_man", "H10301:42:31337")
        credentials.put_user_credential(ctx, "door", "obama", "H10301:42:1")
    save_scbk(tmp_path / "scbk", KEY)
    feed = tmp_path / "feed"
    feed.mkdir()
    for i, f in enumerate(sorted((faces_dir / "people/pexels_woman").iterdir())):
        shutil.copy(f, feed / f"1-unknown-{i}.jpg")
    for i in range(4):  # the same person stays in view a while: the panel has time to answer
        shutil.copy(faces_dir / "video/feat_man.mp4", feed / f"2-known-{i}.mp4")
    master, slave, path = panel_mod.open_pty()
    panel = panel_mod.Panel(master, KEY)
    watcher = Watcher(broker.port, ["facelink/+/decision", "facelink/+/panel"], client_id="osdp-watcher")
    try:
        # the watcher's own marker came back: both its subscriptions are through before the
        # door can publish its first decision
        assert watcher.barrier()
        # The feed is decided on its own clock: ~10 s of scene for the four clips, as long as
        # the default cooldown. Both are pinned far beyond the feed's length so that feat_man
        # is GRANTED once, whatever the tracker makes of the cuts between clips.
        door = start_door(broker.port, str(feed), door__output="osdp", osdp__device=path,
                          osdp__scbk_file=str(tmp_path / "scbk"), osdp__verdict_timeout_s=10,
                          matching__track_max_age_s=600, matching__cooldown_s=3600)
        assert panel.secure(timeout=90), door.log()
        event = panel.next_event(timeout=120)
        assert event is not None, door.log()
        bits = [(event["data"][i // 8] >> (7 - i % 8)) & 1 for i in range(event["length"])]
        assert len(bits) == 26 and sum(bits[:13]) % 2 == 0 and sum(bits[13:]) % 2 == 1
        value = int("".join(map(str, bits[1:25])), 2)
        assert (value >> 16, value & 0xFFFF) == (42, 31337)
        assert panel.led(panel_mod.osdp.CommandLEDColor.Green)
        assert watcher.wait_for(lambda: _verdicts(watcher), 30), door.log()
        assert door.proc.wait(120) == 0, door.log()
        assert panel.next_event(timeout=1) is None  # one card read: the unknown face sent nothing
        assert watcher.wait_for(lambda: len(watcher.payloads("door-1/decision")) >= 2, 20)
        decisions = watcher.payloads("door-1/decision")
        assert [d["decision"] for d in decisions] == ["DENIED_UNKNOWN", "GRANTED"], door.log()
        verdict = _verdicts(watcher)[0]
        assert verdict["verdict"] == "GRANTED" and verdict["credential"] == "H10301:42:31337"
        assert "overlaps" not in verdict and "reason" not in verdict  # one read open; answered
        assert verdict["decision_event_id"] == decisions[1]["event_id"]
        assert PanelVerdictMessage.model_validate(verdict).payload() == verdict  # what the logger accepts
    finally:
        watcher.close()
        panel.close()
        os.close(master)
        os.close(slave)


def _verdicts(watcher: Watcher) -> list[dict]:
    return [p for p in watcher.payloads("door-1/panel") if p["schema"] == "facelink.panel/1"]


def _openings(watcher: Watcher) -> list[dict]:
    return [p for p in watcher.payloads("door-1/panel") if p["schema"] == "facelink.panel-output/1"]


def _osdp_door(tmp_path, broker, make_settings, engine, relay=None, **osdp):
    """The real daemon in this process as the OSDP reader of a libosdp panel on a pty (secure
    channel key saved): (daemon, panel, master fd, slave fd)."""
    panel_mod = pytest.importorskip("tests.access.panel")
    save_scbk(tmp_path / "scbk", KEY)
    master, slave, path = panel_mod.open_pty()
    panel = panel_mod.Panel(master, KEY)
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)},
                             door={"output": "osdp"}, osdp={"device": path, "scbk_file": tmp_path / "scbk", **osdp})
    return door_daemon(settings, engine, relay), panel, master, slave


@contextmanager
def watched_osdp_door(tmp_path, broker, make_settings, engine, relay=None, *, client_id: str, **osdp):
    """The door of :func:`_osdp_door` running: its outbox pump started and connected, a watcher
    of its decisions and panel records (client ``client_id``) subscribed before the door
    publishes (its own marker came back), the secure channel up with its panel; (daemon, panel,
    watcher). Everything is closed afterwards, whatever the test did."""
    daemon, panel, master, slave = _osdp_door(tmp_path, broker, make_settings, engine, relay, **osdp)
    watcher = Watcher(broker.port, ["facelink/+/decision", "facelink/+/panel"], client_id=client_id)
    try:
        daemon.pump.start()
        assert daemon.transport.wait_connected(30)
        assert watcher.barrier(daemon.transport.publish)
        assert panel.secure(timeout=60) and wait_until(lambda: daemon.panel.sender.reader.secure, 30)
        yield daemon, panel, watcher
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=5)
        panel.close()
        os.close(master)
        os.close(slave)


def with_badges(daemon, engine, holders: dict[str, str | None]) -> None:
    """Users of the door's collection, each with a badge (or none)."""
    from facelink.enroll import users

    with Store(daemon.settings.store.database) as store:
        ctx = Context(store, lambda: engine)
        for user, badge in holders.items():
            users.create_user(ctx, "door", user)
            if badge is not None:
                credentials.put_user_credential(ctx, "door", user, badge)


def granted(engine, user: str):
    """A GRANTED for ``user`` at door-1, as the pipeline makes it."""
    from facelink.device.decision import GRANTED, Decision

    return Decision(GRANTED, "door-1", "door", engine.model_version, 99.0, user_id=user, similarity=99.8)


def audited(path, watcher: Watcher):
    """A real audit log at ``path`` fed what the broker delivered to ``watcher`` from door-1:
    (the log, its intake)."""
    from facelink.audit.intake import Intake
    from facelink.audit.store import AuditLog

    audit = AuditLog(path)
    intake = Intake(audit)
    for topic, raw, _retained in list(watcher.messages):
        if topic.startswith("facelink/door-1/"):
            intake.handle(topic, raw)
    return audit, intake


def test_the_panel_opening_the_door_while_it_stops_still_opens_it(tmp_path, broker, make_settings, engine):
    """SIGTERM while the panel decides: the reader is stopped before the relay, and stays on the
    line until the panel is quiet, so the panel's 'output on' after its green LED still drives the
    door (the relay used to be closed first and refused it)."""
    panel_mod = pytest.importorskip("tests.access.panel")
    opened = tmp_path / "opened"
    daemon, panel, master, slave = _osdp_door(tmp_path, broker, make_settings, engine,
                                              CommandRelay(f"touch {opened}", 5.0), verdict_timeout_s=30.0)
    reader = daemon.panel.sender.reader
    watcher = Watcher(broker.port, ["facelink/+/decision", "facelink/+/panel"], client_id="osdp-stop-watcher")
    stopper = threading.Thread(target=daemon.shutdown, daemon=True)
    try:
        daemon.pump.start()
        assert daemon.transport.wait_connected(30)
        assert watcher.barrier()
        assert panel.secure(timeout=60) and wait_until(lambda: reader.secure, 30)
        assert reader.card_read(Credential("H10301", 42, 7), "granted-1")
        assert panel.next_event(timeout=30) is not None
        stopper.start()  # SIGTERM: the daemon is stopping while the panel decides
        assert wait_until(lambda: reader._closing, 30)  # the reader is waiting for the verdict
        # the panel grants the way panels do: green LED, then output 0 on
        assert panel.led(panel_mod.osdp.CommandLEDColor.Green) and panel.output(5)
        stopper.join(60)
        assert not stopper.is_alive()
        assert opened.exists(), "the panel's output command did not reach the door's relay"
        assert watcher.wait_for(lambda: _verdicts(watcher), 30)
        verdict = _verdicts(watcher)[0]
        assert (verdict["decision_event_id"], verdict["verdict"]) == ("granted-1", "GRANTED")
        assert watcher.wait_for(lambda: _openings(watcher), 30)
        assert [(o["likely_for"], o["relay"]) for o in _openings(watcher)] == [("granted-1", "opening")]
    finally:
        watcher.close()
        panel.close()
        os.close(master)
        os.close(slave)


def test_every_opening_the_panel_commands_is_recorded_before_the_relay(tmp_path, broker, make_settings, engine):
    """The panel's output-on opens the door whether or not it answers a card read of the door's
    (its own unlock: software, schedule, operator): each is recorded (facelink.panel-output/1)
    before the relay runs, a relay failure is a second record naming the first, and an opening
    the door cannot record does not open the door. Before, only a log line said so."""
    from facelink.mqtt.schema import PanelOutputMessage

    opened, fail = tmp_path / "opened", tmp_path / "fail"
    relay = CommandRelay(f"test -e {fail} && exit 3; echo x >> {opened}", 5.0)

    def opened_times() -> int:
        return len(opened.read_text().split()) if opened.exists() else 0

    with watched_osdp_door(tmp_path, broker, make_settings, engine, relay,
                           client_id="osdp-openings-watcher") as (daemon, panel, watcher):
        reader = daemon.panel.sender.reader
        assert panel.output(5)  # the panel's own unlock: no card read of the door's
        assert wait_until(lambda: opened_times() == 1, 30)
        assert watcher.wait_for(lambda: _openings(watcher), 30)
        [own] = _openings(watcher)
        assert (own["likely_for"], own["relay"], own["command"]["control_code"]) == (None, "opening", 5)
        assert PanelOutputMessage.model_validate(own).payload() == own  # what the logger accepts
        fail.touch()  # the relay fails from now on
        assert panel.output(5)
        assert watcher.wait_for(lambda: len(_openings(watcher)) == 3, 30)
        second, failure = _openings(watcher)[1:]
        assert second["relay"] == "opening" and failure["relay"] == "failed"
        assert failure["refers_to"] == second["event_id"] and "3" in failure["reason"]
        fail.unlink()

        def disk_full(*_args, **_kw):
            raise OSError(28, "No space left on device")
        daemon.outbox.put = disk_full  # the fault injected: nothing can be recorded
        before = reader.state.commands
        assert panel.output(5)
        assert wait_until(lambda: reader.state.commands > before, 10)  # the panel's command came
        assert not wait_until(lambda: opened_times() > 1, 3)  # not recorded: the door stays shut


def test_an_opening_at_a_door_without_a_relay_is_recorded_as_the_panels(tmp_path, broker, make_settings, engine):
    """door.output = "osdp" and no relay of the door's own (the panel's strike opens the door):
    the panel's output-on is still recorded, saying the door itself drove nothing (no_relay)."""
    from facelink.access.osdp_verdicts import PanelOutput

    daemon, panel, master, slave = _osdp_door(tmp_path, broker, make_settings, engine)  # no relay
    try:
        daemon._panel_output(PanelOutput({"output_no": 0, "control_code": 5, "timer_count": 30}, "granted-9"))
        [event] = daemon.outbox.peek(10)
        payload = json.loads(event.payload)
        assert event.topic == "facelink/door-1/panel"
        assert (payload["schema"], payload["relay"], payload["likely_for"]) == \
            ("facelink.panel-output/1", "no_relay", "granted-9")
    finally:
        daemon.shutdown(flush_timeout_s=1)
        panel.close()
        os.close(master)
        os.close(slave)


def test_a_granted_the_panel_is_not_sent_is_actuation_failed(tmp_path, broker, make_settings, engine):
    """door.output = "osdp" and no relay of the door's own: the panel is what opens the door, so a
    GRANTED it is not sent (the user has no credential; the same card again within
    osdp.debounce_s) is followed by ACTUATION_FAILED, as a failed relay is; it used to be
    dropped, and the audit trail said the door had opened. A GRANTED that is sent has none."""
    with watched_osdp_door(tmp_path, broker, make_settings, engine, debounce_s=600.0,  # no relay
                           client_id="osdp-not-sent-watcher") as (daemon, panel, watcher):
        with_badges(daemon, engine, {"nobadge": None, "ann": "H10301:42:7"})
        sent, no_badge, again = granted(engine, "ann"), granted(engine, "nobadge"), granted(engine, "ann")
        for decision in (sent, no_badge, again):
            daemon.emit(decision)
        assert panel.next_event(timeout=30) is not None  # the first one reached the panel
        assert watcher.wait_for(lambda: len(watcher.payloads("door-1/decision")) >= 5, 60)
        assert watcher.barrier(daemon.transport.publish)  # nothing more is on its way
        got = [(d["decision"], d.get("refers_to")) for d in watcher.payloads("door-1/decision")]
        assert got == [("GRANTED", None), ("GRANTED", None), ("ACTUATION_FAILED", no_badge.event_id),
                       ("GRANTED", None), ("ACTUATION_FAILED", again.event_id)]
        reasons = [d["reason"] for d in watcher.payloads("door-1/decision") if d["decision"] == "ACTUATION_FAILED"]
        assert "no credential" in reasons[0]
        assert "the same card was sent" in reasons[1] and "osdp.debounce_s (600 s)" in reasons[1]
        assert panel.next_event(timeout=1) is None  # one card read in all


def test_a_reload_may_not_shorten_the_cooldown_below_the_running_debounce(tmp_path, broker, make_settings, engine):
    """SIGHUP applies [matching] but the OSDP reader keeps the debounce it started with: a file
    that lowers both (valid by itself) would leave the cooldown under the running debounce, and a
    user granted again would not reach the panel. Refused, whole."""
    daemon, panel, master, slave = _osdp_door(tmp_path, broker, make_settings, engine, debounce_s=5.0)
    config = tmp_path / "door.toml"
    config.write_text('[door]\noutput = "osdp"\n[osdp]\ndebounce_s = 2\n[matching]\ncooldown_s = 2\n')
    daemon.config_path = config
    try:
        before = daemon.pipeline.components
        daemon.reload()
        assert daemon.settings.matching.cooldown_s == 10.0 and daemon.pipeline.components is before
        config.write_text('[door]\noutput = "osdp"\n[osdp]\ndebounce_s = 2\n[matching]\ncooldown_s = 6\n')
        daemon.reload()  # at or above the running 5 s: applied
        assert daemon.settings.matching.cooldown_s == 6.0 and daemon.pipeline.components is not before
    finally:
        daemon.shutdown(flush_timeout_s=1)
        panel.close()
        os.close(master)
        os.close(slave)


def test_the_panel_switching_the_output_off_locks_the_door_at_once(tmp_path, broker, make_settings, engine, gpio):
    """The panel's output off that aborts a timed operation (control codes 1, permanent off, and
    6, temporary off) ends the running pulse of the door's relay now (found in review: the lock
    stayed released for the rest of ``pulse_s`` after the panel said lock); 3 (off once the timed
    operation is done) lets it end at its time. The real GpioRelay on gpiozero's mock pins."""
    from facelink.device.door import GpioRelay

    pin = gpio.gpio(17)
    with watched_osdp_door(tmp_path, broker, make_settings, engine, GpioRelay(17, 600.0),
                           client_id="osdp-output-off-watcher") as (daemon, panel, watcher):
        assert panel.output(5)  # the panel opens the door: a 600 s pulse
        assert wait_until(lambda: pin.state == 1, 30)
        assert panel.output(3)  # off once the timed operation is done
        assert panel.output(5)  # handed on after the 3, in order: once it is recorded, the 3 was handled
        assert watcher.wait_for(lambda: len(_openings(watcher)) == 3, 30)
        assert pin.state == 1
        assert panel.output(1)  # permanent off: now
        assert wait_until(lambda: pin.state == 0, 30)
        assert panel.output(5)
        assert wait_until(lambda: pin.state == 1, 30)
        assert panel.output(6)  # temporary off: now
        assert wait_until(lambda: pin.state == 0, 30)
        assert daemon.relay.stuck is None
        # an off is no opening: recorded after the pulse it ended (the opening's); 3 locks nothing
        # now: recorded as it comes, naming the pulse left to end at its time
        assert watcher.wait_for(lambda: len(_openings(watcher)) == 6, 30)
        records = [(o["relay"], o["command"]["control_code"], o.get("refers_to")) for o in _openings(watcher)]
        ids = [o["event_id"] for o in _openings(watcher)]
        assert records == [("opening", 5, None), ("left_running", 3, ids[0]), ("opening", 5, None),
                           ("ended", 1, ids[2]), ("opening", 5, None), ("ended", 6, ids[4])]
