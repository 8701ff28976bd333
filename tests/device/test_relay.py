"""The relay: a later pulse is never cut short by an earlier pulse's timer, nothing fires after
close(), and a relay that fails after GRANTED is published as ACTUATION_FAILED."""

from __future__ import annotations

import threading
import time

import pytest

from facelink.device.daemon import Daemon
from facelink.device.decision import GRANTED, Decision
from facelink.device.door import CommandRelay, PulseSwitch

from .conftest import Watcher, door_daemon


class Output:
    """A lock output that records when it was switched."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.switched_off = threading.Event()

    def on(self) -> None:
        self.calls.append(("on", time.monotonic()))

    def off(self) -> None:
        self.calls.append(("off", time.monotonic()))
        self.switched_off.set()


def _timers_done(timeout: float = 30.0) -> None:
    """Every relay timer thread has finished (fired or cancelled): nothing more can switch."""
    for t in threading.enumerate():
        if isinstance(t, threading.Timer):
            t.join(timeout)
            assert not t.is_alive()


def test_an_earlier_pulse_does_not_cut_a_later_one_short():
    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=1.5)
    switch.pulse()
    time.sleep(0.8)
    switch.pulse()  # someone else granted while the lock is still released
    second = out.calls[-1][1]
    assert out.switched_off.wait(30)
    _timers_done()  # the first pulse's timer has run (or was cancelled) by now
    offs = [t for kind, t in out.calls if kind == "off"]
    assert len(offs) == 1 and offs[0] >= second + 1.5  # timers never fire early: only the later one did
    switch.close()


def test_nothing_fires_after_close():
    out = Output()
    switch = PulseSwitch(out.on, out.off, pulse_s=0.3)
    switch.pulse()
    switch.close()  # the lock is locked now
    assert out.calls[-1][0] == "off"
    n = len(out.calls)
    _timers_done()
    assert len(out.calls) == n  # the pending timer did nothing
    with pytest.raises(RuntimeError):
        switch.pulse()


def _subscribed(daemon: Daemon, watcher: Watcher) -> None:
    """The watcher's subscription is live: a probe from the door's own client comes back."""
    assert daemon.transport.wait_connected(30)
    assert watcher.barrier(daemon.transport.publish)


def _publisher(settings):
    """A fresh client of the product's own MQTT layer (the daemon's is stopped by then)."""
    from facelink.mqtt.client import MqttClient

    client = MqttClient(settings.mqtt, client_id="relay-barrier")
    assert client.wait_connected(30)
    return lambda topic, payload: client.publish(topic, payload)


def decisions(watcher: Watcher) -> list[dict]:
    return [p for p in watcher.payloads("/decision") if "probe" not in p]


def _granted(engine) -> Decision:
    return Decision(GRANTED, "door-1", "door", engine.model_version, 99.0, user_id="emp-7", similarity=99.8,
                    track_id=1)


@pytest.mark.parametrize("command,failure", [("exit 3", "exited with 3"),
                                             ("/nonexistent/open-the-door", "exited with 127")])
def test_failed_command_after_granted_is_published(tmp_path, broker, make_settings, engine, command, failure):
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = door_daemon(settings, engine, CommandRelay(command, 1.0))
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="relay-watcher")
    daemon.pump.start()
    _subscribed(daemon, watcher)
    granted = _granted(engine)
    daemon.emit(granted)
    assert watcher.wait_for(lambda: len(decisions(watcher)) >= 2, 60)
    first, follow_up = decisions(watcher)
    assert first["decision"] == "GRANTED" and first["event_id"] == granted.event_id
    assert follow_up["decision"] == "ACTUATION_FAILED" and follow_up["refers_to"] == granted.event_id
    assert follow_up["user_id"] == "emp-7" and failure in follow_up["reason"]
    watcher.close()
    assert daemon.shutdown(flush_timeout_s=5) == 0


def test_a_working_command_publishes_no_follow_up(tmp_path, broker, make_settings, engine):
    opened = tmp_path / "opened"
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = door_daemon(settings, engine, CommandRelay(f'echo "$FACELINK_USER_ID" > {opened}', 1.0))
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="relay-ok-watcher")
    daemon.pump.start()
    _subscribed(daemon, watcher)
    daemon.emit(_granted(engine))
    assert daemon.shutdown(flush_timeout_s=10) == 0  # waits for the command
    assert opened.read_text().strip() == "emp-7"
    assert watcher.wait_for(lambda: decisions(watcher), 30)
    assert watcher.barrier(_publisher(settings))  # a follow-up would have arrived before the marker
    assert [p["decision"] for p in decisions(watcher)] == ["GRANTED"]
    watcher.close()


def test_a_failure_during_shutdown_is_still_delivered(tmp_path, broker, make_settings, engine):
    """SIGTERM right after GRANTED: shutdown waits for the door command, then flushes its failure."""
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = door_daemon(settings, engine, CommandRelay("sleep 1; exit 1", 1.0))
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="relay-stop-watcher")
    daemon.pump.start()
    _subscribed(daemon, watcher)
    granted = _granted(engine)
    daemon.emit(granted)
    assert daemon.shutdown(flush_timeout_s=10) == 0
    assert watcher.wait_for(lambda: len(decisions(watcher)) >= 2, 30)
    assert [(p["decision"], p.get("refers_to")) for p in decisions(watcher)] == [
        ("GRANTED", None), ("ACTUATION_FAILED", granted.event_id)]
    watcher.close()
