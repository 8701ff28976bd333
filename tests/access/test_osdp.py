"""FaceLink's OSDP reader against a real libosdp Control Panel over a pty pair, secure channel on."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from facelink.access.osdp_pd import OsdpReader
from facelink.access.panel import OsdpSender
from facelink.access.scbk import load_scbk, save_scbk
from facelink.access.wiegand import Credential
from facelink.errors import ConfigError

from .panel import ADDRESS, KEY, osdp, wait_until


def _decode_h10301(data: bytes, length: int) -> tuple[int, int]:
    """The panel's side, written independently of FaceLink: H10301 with its parity checked."""
    assert length == 26
    bits = [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(length)]
    assert sum(bits[0:13]) % 2 == 0, "leading even parity"
    assert sum(bits[13:26]) % 2 == 1, "trailing odd parity"
    value = int("".join(map(str, bits[1:25])), 2)
    return value >> 16, value & 0xFFFF


def _scenario(module: str, tmp_path) -> dict:
    """Run ``tests.access.<module>`` in a child process (a deadlock or a crash inside libosdp ends
    only the child) and return the JSON line it printed last."""
    import json
    import subprocess

    run = subprocess.run([sys.executable, "-m", f"tests.access.{module}", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def _online(panels, master: int, reader: OsdpReader):
    """The site's panel on the line, and the reader's secure channel with it up."""
    panel = panels(master, KEY)
    assert panel.secure(), "secure channel did not come up"
    assert wait_until(lambda: reader.secure)
    return panel


def _stuck_until(release, into: list):
    """A record (an outbox commit on a busy disk) that is stuck until ``release`` is set; then
    the item is appended to ``into``."""
    def record(item) -> None:
        release.wait(30)
        into.append(item)
    return record


def _reader(path, scbk_file, **kw) -> OsdpReader:
    kw.setdefault("install_mode", False)
    return OsdpReader(path, address=ADDRESS, baud=9600, scbk_file=scbk_file, **kw)


def test_card_read_and_panel_commands_over_the_secure_channel(tmp_path, pty_pair, panels):
    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts, outputs = [], []
    reader = _reader(path, tmp_path / "scbk", debounce_s=5.0, verdict_timeout_s=5.0,
                     on_verdict=verdicts.append, on_output=outputs.append)
    try:
        panel = _online(panels, master, reader)
        assert reader.card_read(Credential("H10301", 18, 12345), "event-1")
        event = panel.next_event()
        assert event is not None and event["event"] == osdp.Event.CardRead
        assert event["format"] == osdp.CardFormat.Wiegand
        assert _decode_h10301(event["data"], event["length"]) == (18, 12345)
        # the panel grants: green LED, output on, a beep -> all arrive, the verdict is recorded
        assert panel.led(osdp.CommandLEDColor.Green) and panel.output(5) and panel.buzzer()
        assert wait_until(lambda: reader.state.buzzer is not None and outputs)
        assert reader.state.led["on_color"] == osdp.CommandLEDColor.Green
        assert reader.state.output["control_code"] == 5 and outputs[0].command["output_no"] == 0
        assert [(v.decision_event_id, v.verdict, v.credential) for v in verdicts] == \
            [("event-1", "GRANTED", "H10301:18:12345")]
        # the same badge again at once is debounced: the panel sees nothing
        assert not reader.card_read(Credential("H10301", 18, 12345), "event-2")
        assert panel.next_event(timeout=1.5) is None
        # another badge goes through; a red LED is the panel's DENIED
        assert reader.card_read(Credential("H10301", 18, 999), "event-3")
        event = panel.next_event()
        assert _decode_h10301(event["data"], event["length"]) == (18, 999)
        assert panel.led(osdp.CommandLEDColor.Red)
        assert wait_until(lambda: len(verdicts) == 2)
        assert verdicts[1].verdict == "DENIED" and verdicts[1].decision_event_id == "event-3"
    finally:
        reader.close()


def test_a_panel_without_the_key_gets_nothing(tmp_path, pty_pair, panels):
    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    reader = _reader(path, tmp_path / "scbk")
    try:
        panel = panels(master, bytes(16))  # the wrong key
        assert not panel.secure(timeout=6)
        reader.card_read(Credential("H10301", 1, 2), "event-x")
        assert panel.next_event(timeout=2) is None
    finally:
        reader.close()


def test_install_mode_takes_the_panels_key(tmp_path, pty_pair, panels):
    """Until the panel's key is written nothing leaves the reader (the install key is published);
    then libosdp starts again with the key, enforcing, and the panel -- once it is back online
    (a libosdp panel after its offline wait: a new one here) -- gets card reads under it."""
    master, path = pty_pair
    key_file = tmp_path / "keys" / "scbk"
    with pytest.raises(ConfigError, match="install_mode"):
        _reader(path, key_file)  # no key and no install mode: refused
    reader = _reader(path, key_file, install_mode=True)
    try:
        assert not reader.provisioned
        assert "install mode" in reader.send_card(Credential("H10306", 4242, 65000), "event-0")
        panel = panels(master, KEY, enforce=False)  # a panel provisioning a new reader
        assert wait_until(lambda: key_file.exists())
        assert load_scbk(key_file) == KEY
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert wait_until(lambda: reader.provisioned) and reader.fault is None
        panel.close()
        panel = _online(panels, master, reader)  # the panel back, enforcing its key
        assert reader.card_read(Credential("H10306", 4242, 65000), "event-1")
        event = panel.next_event()
        assert event["length"] == 34
    finally:
        reader.close()


def _gets_nothing(intruder, reader, outputs) -> None:
    """Not just no secure channel: no card read reaches the intruder and its output command does
    not reach the door (a panel may come online in plaintext where libosdp does not enforce)."""
    assert not intruder.secure(timeout=8)
    reader.card_read(Credential("H10301", 1, 2), "event-intruder")
    assert intruder.next_event(timeout=2) is None
    intruder.output(5)
    assert not wait_until(lambda: outputs, 2)


def test_install_mode_ends_with_the_panels_key(tmp_path, pty_pair, panels):
    """Once the panel has sent its key, the reader refuses the default install key: another panel
    on the bus (its own key, falling back to the default one as a panel provisioning a reader
    does, or none at all) gets no secure channel, no card read, no say over the door's output and
    cannot replace the key -- neither in the same run (libosdp started again with the key) nor
    after a restart with install_mode still on (the key file decides)."""
    master, path = pty_pair
    key_file = tmp_path / "scbk"
    other = bytes.fromhex("ffeeddccbbaa99887766554433221100")
    outputs: list = []
    reader = _reader(path, key_file, install_mode=True, on_output=outputs.append)
    try:
        panel = panels(master, KEY, enforce=False)
        assert wait_until(lambda: load_scbk(key_file) == KEY) and wait_until(lambda: reader.provisioned)
        panel.close()
        for scbk in (other, None):
            intruder = panels(master, scbk, enforce=False)
            _gets_nothing(intruder, reader, outputs)
            intruder.close()
    finally:
        reader.close()
    assert load_scbk(key_file) == KEY
    reader = _reader(path, key_file, install_mode=True, on_output=outputs.append)  # restarted, install_mode on
    try:
        assert reader.provisioned  # the key file decides, not install_mode
        for scbk in (other, None):
            intruder = panels(master, scbk, enforce=False)
            _gets_nothing(intruder, reader, outputs)
            intruder.close()
        assert _online(panels, master, reader)  # the site's panel still gets in
    finally:
        reader.close()
    assert load_scbk(key_file) == KEY


def test_a_card_read_waiting_for_the_panel_is_not_handed_to_a_plaintext_one(tmp_path, pty_pair, panels):
    """A read queued for the site's panel just as it leaves the line stays in libosdp's queue for
    up to ``verdict_timeout_s``; a panel without the key polling then gets nothing -- after a
    provisioning in the same run too (libosdp was started again with the key and EnforceSecure;
    started in install mode it answered a plaintext poll with the read)."""
    master, path = pty_pair
    key_file = tmp_path / "scbk"
    outputs: list = []
    reader = _reader(path, key_file, install_mode=True, verdict_timeout_s=6.0, on_output=outputs.append)
    try:
        installer = panels(master, KEY, enforce=False)
        assert wait_until(lambda: reader.provisioned)
        installer.close()
        site = _online(panels, master, reader)
        site.close()
        assert reader.card_read(Credential("H10301", 7, 4321), "event-queued")
        intruder = panels(master, None, enforce=False)
        assert intruder.next_event(timeout=4) is None
        intruder.output(5)
        assert not wait_until(lambda: outputs, 2)
    finally:
        reader.close()


def test_before_the_panels_key_the_install_keys_channel_counts_for_nothing(tmp_path, pty_pair):
    """A secure channel before the panel's KEYSET can only be under the published install key
    (anyone's): no card read is sent over it and no command is obeyed. libosdp's own panel sends
    KEYSET the moment that channel is up, so the channel is stood in for here (libosdp's context
    says it is active); the reader's decision is what is tested."""
    master, path = pty_pair
    outputs: list = []
    reader = _reader(path, tmp_path / "scbk", install_mode=True, on_output=outputs.append)

    class ChannelUp:  # libosdp's context, saying a secure channel is active
        def __init__(self, ctx) -> None:
            self.ctx = ctx

        def is_sc_active(self) -> bool:
            return True

        def __getattr__(self, name):
            return getattr(self.ctx, name)

    real = reader._pd.ctx
    try:
        reader._pd.ctx = ChannelUp(real)
        assert reader.secure and not reader.provisioned
        assert "install mode" in reader.send_card(Credential("H10301", 7, 4321), "event-1")
        output = {"command": osdp.Command.Output, "output_no": 0, "control_code": 5, "timer_count": 30}
        assert reader._on_command(output) == (-1, None)  # a NAK
        assert not wait_until(lambda: outputs or reader.state.output, 1)
    finally:
        reader._pd.ctx = real
        reader.close()


def test_a_reader_that_cannot_start_again_with_the_key_sends_nothing(tmp_path, pty_pair, panels):
    """libosdp failing to start again after the panel's KEYSET leaves the reader down, saying why
    (health), and every card read refused with that reason: never back in install mode. It is
    tried again after a back-off (here the first retry is an hour away)."""
    master, path = pty_pair
    key_file = tmp_path / "scbk"
    reader = _reader(path, key_file, install_mode=True, restart_retry_s=(3600.0,))
    try:
        def broken(key):
            raise RuntimeError("libosdp setup failed")
        reader._start_pd = broken  # the fault injected: the restart's start fails
        panels(master, KEY, enforce=False)
        assert wait_until(lambda: reader.fault is not None)
        assert "libosdp setup failed" in reader.fault and "1 attempt" in reader.fault
        assert load_scbk(key_file) == KEY and not reader.provisioned
        assert not reader.online and not reader.secure
        assert "restart FaceLink" in reader.send_card(Credential("H10301", 7, 4321), "event-1")
        health = OsdpSender(reader).health()
        assert (health["osdp_provisioned"], health["osdp_online"]) == (False, False)
        assert "restart FaceLink" in health["osdp_fault"]
    finally:
        reader.close()


def test_a_failed_restart_is_tried_again_until_the_reader_runs_with_the_key(tmp_path, pty_pair, panels):
    """A restart with the panel's key that fails is tried again after the back-off, by the reader
    itself: sending nothing while it fails, and once libosdp runs with the key and EnforceSecure,
    the fault is gone and the site's panel gets card reads under its key (no site visit)."""
    master, path = pty_pair
    key_file = tmp_path / "scbk"
    reader = _reader(path, key_file, install_mode=True, restart_retry_s=(0.3, 0.6))
    real_start, attempts = reader._start_pd, []

    def fails_twice(key):  # what the reader said when each attempt began
        attempts.append((key, reader.provisioned, reader.fault))
        if len(attempts) <= 2:
            raise RuntimeError(f"libosdp setup failed ({len(attempts)})")
        return real_start(key)

    try:
        reader._start_pd = fails_twice
        installer = panels(master, KEY, enforce=False)
        assert wait_until(lambda: reader.provisioned, 10)
        assert [(key, provisioned) for key, provisioned, _ in attempts] == [(KEY, False)] * 3
        assert attempts[0][2] is None and "(1)" in attempts[1][2] and "1 attempt" in attempts[1][2]
        assert "(2)" in attempts[2][2] and "2 attempt" in attempts[2][2]
        assert reader.fault is None
        installer.close()
        site = _online(panels, master, reader)
        assert reader.card_read(Credential("H10301", 7, 4321), "event-2")
        assert site.next_event()["length"] == 26
    finally:
        reader.close()


def test_a_restart_that_falls_due_while_closing_is_not_tried(tmp_path, pty_pair, panels):
    """A failed restart's retry that falls due while close() settles is not tried (the reader is
    going down) and does not make the verdict thread spin on it: before, every pass of its loop
    found the retry due and ``_enforce`` returned at once (~70,000 passes in half a second)."""
    master, path = pty_pair
    reader = _reader(path, tmp_path / "scbk", install_mode=True, restart_retry_s=(0.3,))
    attempts, calls = [], []
    real_enforce = reader._enforce

    def broken(key):
        attempts.append(reader._closing)
        raise RuntimeError("libosdp setup failed")

    def counted():
        calls.append(reader._closing)
        real_enforce()

    reader._start_pd, reader._enforce = broken, counted
    try:
        panels(master, KEY, enforce=False)
        assert wait_until(lambda: reader.fault is not None)
    finally:
        reader.close(settle_s=1.0)  # retries fall due inside this
    assert attempts and not any(attempts)  # none tried once closing began
    assert calls.count(True) <= 2


def test_install_mode_refuses_the_published_install_key_as_the_site_key(tmp_path, pty_pair, panels):
    """A panel with no site key of its own may "provision" the reader with SCBK-D itself: written
    and enforced, anyone who read the OSDP spec would get card reads and the door's output. The
    KEYSET is NAKed, nothing is written, the reader stays unprovisioned and health says why."""
    master, path = pty_pair
    key_file = tmp_path / "scbk"
    scbk_d = bytes(range(0x30, 0x40))
    reader = _reader(path, key_file, install_mode=True)
    try:
        panels(master, scbk_d, enforce=False)
        assert wait_until(lambda: reader.provisioning.key_error is not None)
        assert not key_file.exists() and not reader.provisioned
        assert "install key" in OsdpSender(reader).health()["osdp_fault"]
        assert "install key" in reader.send_card(Credential("H10301", 7, 4321), "event-1")
    finally:
        reader.close()
    with pytest.raises(ConfigError, match="install key"):
        save_scbk(key_file, scbk_d)
    key_file.write_text(scbk_d.hex())
    os.chmod(key_file, 0o600)
    with pytest.raises(ConfigError, match="install key"):
        load_scbk(key_file)


def test_key_file_must_be_private_and_well_formed(tmp_path):
    key_file = tmp_path / "scbk"
    key_file.write_text(KEY.hex())
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_scbk(key_file)
    os.chmod(key_file, 0o600)
    key_file.write_text("abcd")
    with pytest.raises(ConfigError, match="16"):
        load_scbk(key_file)
    with pytest.raises(ConfigError, match="serial device"):
        OsdpReader(str(tmp_path / "no-such-tty"), address=1, baud=9600, scbk_file=tmp_path / "none",
                   install_mode=True)


def test_the_key_is_written_through_no_file_or_link_left_beside_it(tmp_path):
    """The panel's key is written to a new temporary file (O_EXCL, 0600) and renamed: a link left
    at the old fixed name (``scbk.tmp``) is not written through, and nothing is left beside the key."""
    victim = tmp_path / "elsewhere"
    (tmp_path / "keys").mkdir(mode=0o700)
    (tmp_path / "keys" / "scbk.tmp").symlink_to(victim)
    save_scbk(tmp_path / "keys" / "scbk", KEY)
    assert not victim.exists()
    assert load_scbk(tmp_path / "keys" / "scbk") == KEY
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "scbk").st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["scbk", "scbk.tmp"]  # the link, untouched


def test_stopping_the_reader_still_takes_the_panels_answer(tmp_path, pty_pair, panels):
    """SIGTERM right after a card read: the panel's verdict is recorded (the daemon writes it to
    the outbox before the last drain), not replaced by NO_RESPONSE."""
    import threading

    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts = []
    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=30.0, on_verdict=verdicts.append)
    closer = threading.Thread(target=reader.close)
    try:
        panel = _online(panels, master, reader)
        assert reader.card_read(Credential("H10301", 7, 4242), "event-1")
        assert panel.next_event() is not None
        closer.start()  # the reader is being stopped while the panel decides
        assert not verdicts
        assert panel.led(osdp.CommandLEDColor.Green)
        closer.join(40)
        assert not closer.is_alive()
        assert [(v.decision_event_id, v.verdict) for v in verdicts] == [("event-1", "GRANTED")]
    finally:
        if not closer.is_alive() and not closer.ident:
            reader.close()


def test_the_panel_answering_while_a_card_read_is_sent_stalls_nothing(tmp_path):
    """Two people granted within the verdict window; the panel's answer arrives while the second
    card read is being handed over and recording the first one's NO_RESPONSE is slow (an outbox
    commit). libosdp's thread holds its own lock while it calls FaceLink back, so a reader that
    called libosdp under its own lock deadlocked here: the pipeline hung until the watchdog.
    Run in a child process: a deadlocked libosdp thread would keep this one from ever exiting."""
    out = _scenario("overlap_scenario", tmp_path)
    assert out["second_card_read"] is True
    assert _decode_h10301(bytes(out["second_event"]), 26) == (18, 2)
    # the green LED came after read 2 reached the panel: it answers read 2, flagged as
    # possibly meant for read 1 (OSDP has no request id)
    assert out["verdicts"] == [["event-1", "NO_RESPONSE", None, "superseded"], ["event-2", "GRANTED", "event-1", None]]
    # the line still works, and libosdp's own command queue is not left to grow
    assert _decode_h10301(bytes(out["third_event"]), 26) == (18, 3)
    assert out["libosdp_queue_empty"] is True


def test_a_card_read_the_panel_never_polled_is_not_sent_later(tmp_path, pty_pair, panels):
    """A card read sent while the panel is away closes NO_RESPONSE and is dropped: a panel that
    comes back minutes later must not grant it to an empty doorway."""
    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts = []
    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=1.0, on_verdict=verdicts.append)
    try:
        reader.card_read(Credential("H10301", 5, 55), "event-offline")  # nobody polls the line yet
        assert wait_until(lambda: verdicts, 10)
        assert [(v.decision_event_id, v.verdict, v.reason) for v in verdicts] == \
            [("event-offline", "NO_RESPONSE", "not_polled")]
        panel = _online(panels, master, reader)
        assert panel.next_event(timeout=3) is None  # the stale read never reaches the panel
        assert reader.card_read(Credential("H10301", 5, 56), "event-online")
        event = panel.next_event()
        assert _decode_h10301(event["data"], event["length"]) == (5, 56)
    finally:
        reader.close()


def test_a_read_the_panel_polled_and_left_unanswered_says_so(tmp_path, pty_pair, panels):
    """The panel took the card read and said nothing within the window: NO_RESPONSE, ``no_answer``
    (not the offline case: the security staff can tell a silent panel from an absent one)."""
    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts = []
    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=1.0, on_verdict=verdicts.append)
    try:
        panel = _online(panels, master, reader)
        assert reader.card_read(Credential("H10301", 5, 57), "event-silent")
        assert panel.next_event() is not None
        assert wait_until(lambda: verdicts, 10)
        assert [(v.decision_event_id, v.verdict, v.reason, v.command) for v in verdicts] == \
            [("event-silent", "NO_RESPONSE", "no_answer", None)]
    finally:
        reader.close()


def test_dropping_a_stale_read_keeps_a_newer_one_still_in_its_window(tmp_path, pty_pair, panels):
    """libosdp can only empty its whole event queue. When the stale read is dropped, a newer read
    still inside its window must stay queued: the panel coming back in time gets that one (and
    only that one) and its answer is recorded against it."""
    import threading
    import time

    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts, first_closed = [], threading.Event()

    def record(v) -> None:
        verdicts.append(v)
        first_closed.set()

    timeout = 6.0
    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=timeout, on_verdict=record)
    try:
        started = time.monotonic()
        assert reader.card_read(Credential("H10301", 5, 55), "event-stale")  # nobody polls the line
        assert not wait_until(lambda: verdicts, started + timeout / 2 - time.monotonic())
        assert reader.card_read(Credential("H10301", 5, 56), "event-newer")  # half a window later
        assert first_closed.wait(timeout + 5)
        assert [(v.decision_event_id, v.verdict, v.reason) for v in verdicts] == \
            [("event-stale", "NO_RESPONSE", "not_polled")]
        panel = _online(panels, master, reader)  # back while the newer read's window is still open
        event = panel.next_event()
        assert event is not None and _decode_h10301(event["data"], event["length"]) == (5, 56)
        assert panel.led(osdp.CommandLEDColor.Green)
        assert wait_until(lambda: len(verdicts) == 2, 10)
        assert (verdicts[1].decision_event_id, verdicts[1].verdict) == ("event-newer", "GRANTED")
        assert panel.next_event(timeout=2) is None  # the stale read never arrives
    finally:
        reader.close()


def test_a_permanent_led_colour_is_not_the_panels_answer(tmp_path, pty_pair, panels):
    """A panel sets its idle colour with a permanent LED command (often red: "locked") and ends a
    temporary colour with a cancel (which still carries colour bytes): neither answers a card read. (An output other than 0 never reaches FaceLink: libosdp NAKs it,
    the reader declares one output.)"""
    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts, outputs = [], []
    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=30.0, on_verdict=verdicts.append,
                     on_output=outputs.append)
    try:
        panel = _online(panels, master, reader)
        assert reader.card_read(Credential("H10301", 3, 33), "event-1")
        assert panel.next_event() is not None
        assert panel.led(osdp.CommandLEDColor.Red, temporary=False)  # back to the idle colour
        assert panel.led(osdp.CommandLEDColor.Red, control_code=1)  # cancels a temporary colour
        assert panel.buzzer()  # sent last: once it is seen, the LEDs before it were handled
        assert wait_until(lambda: reader.state.buzzer is not None)
        assert (reader.state.led["temporary"], reader.state.led["control_code"]) == (True, 1)  # the cancel
        assert verdicts == [] and outputs == []
        assert panel.led(osdp.CommandLEDColor.Green) and panel.output(5)
        assert wait_until(lambda: outputs)
        assert [(v.decision_event_id, v.verdict) for v in verdicts] == [("event-1", "GRANTED")]
        assert outputs[0].command["output_no"] == 0
    finally:
        reader.close()


def test_a_slow_verdict_record_holds_up_neither_the_door_nor_close(tmp_path, pty_pair, panels):
    """Recording a verdict (an outbox commit on a busy disk) is stuck: the panel's output-on for
    the next read still drives the door at once, and every verdict is recorded, in order, before
    close() returns."""
    import threading

    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts, outputs, release = [], [], threading.Event()

    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=2.0, on_verdict=_stuck_until(release, verdicts),
                     on_output=outputs.append)
    closer = threading.Thread(target=reader.close)
    try:
        panel = _online(panels, master, reader)
        assert reader.card_read(Credential("H10301", 4, 44), "event-1")
        assert panel.next_event() is not None
        assert panel.led(osdp.CommandLEDColor.Green)  # -> on_verdict, which now hangs
        assert reader.card_read(Credential("H10301", 4, 45), "event-2")
        assert panel.next_event() is not None
        assert panel.output(5)  # event-2's grant
        assert wait_until(lambda: outputs, 10)  # the door opens while the record is stuck
        closer.start()
        assert wait_until(lambda: reader._closed, 30)  # libosdp is torn down, the record still stuck
        assert verdicts == [] and closer.is_alive()
        release.set()
        closer.join(30)
        assert not closer.is_alive()
        assert [(o.command["control_code"], o.likely_for) for o in outputs] == [(5, "event-2")]
        assert [(v.decision_event_id, v.verdict) for v in verdicts] == [("event-1", "GRANTED"),
                                                                         ("event-2", "GRANTED")]
    finally:
        release.set()
        if not closer.ident:
            reader.close()


def test_an_opening_waiting_for_its_record_holds_up_no_verdict(tmp_path, pty_pair, panels):
    """The door records an opening before its relay runs; that record is stuck (an outbox commit
    on a busy disk): a card read the panel then leaves unanswered still closes NO_RESPONSE on
    time (its window is not stretched while the outbox waits: the openings have their own
    thread), and the opening is handed over once the record goes through, before close()."""
    import threading

    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts, outputs, release = [], [], threading.Event()

    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=1.0, on_verdict=verdicts.append,
                     on_output=_stuck_until(release, outputs))
    try:
        panel = _online(panels, master, reader)
        assert panel.output(5)  # the panel's own unlock: its record is now stuck
        assert wait_until(lambda: reader.state.output is not None, 10)
        assert reader.card_read(Credential("H10301", 4, 48), "event-1")
        assert panel.next_event() is not None  # polled, and never answered
        assert wait_until(lambda: verdicts, 6)  # closed after its 1 s window, the record still stuck
        assert [(v.decision_event_id, v.verdict, v.reason) for v in verdicts] == [("event-1", "NO_RESPONSE",
                                                                                   "no_answer")]
        assert outputs == []
        release.set()
        reader.close()
        assert [(o.command["control_code"], o.likely_for) for o in outputs] == [(5, None)]
    finally:
        release.set()
        reader.close()


def test_a_stale_read_is_dropped_even_while_a_verdict_record_is_stuck(tmp_path, pty_pair, panels):
    """The panel is away; the first read's NO_RESPONSE is being recorded (stuck); a second read
    times out meanwhile. It must still be dropped from libosdp's queue on time, or the panel,
    back a moment later, would get it and could open the door to nobody."""
    import threading
    import time

    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts, stuck, release = [], threading.Event(), threading.Event()

    def slow(v) -> None:
        stuck.set()
        release.wait(60)
        verdicts.append(v)

    timeout = 1.0
    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=timeout, on_verdict=slow)
    try:
        assert reader.card_read(Credential("H10301", 6, 61), "event-a")
        assert stuck.wait(10)  # event-a's NO_RESPONSE: the record hangs from here on
        assert reader.card_read(Credential("H10301", 6, 62), "event-b")
        expired_by = time.monotonic() + timeout + 1.0  # event-b's window and a margin
        assert not wait_until(lambda: verdicts, expired_by - time.monotonic())
        panel = _online(panels, master, reader)  # back, with both records still stuck
        assert panel.next_event(timeout=3) is None  # event-b never arrives
        release.set()
        assert wait_until(lambda: len(verdicts) == 2)
        assert [(v.decision_event_id, v.verdict, v.reason) for v in verdicts] == \
            [("event-a", "NO_RESPONSE", "not_polled"), ("event-b", "NO_RESPONSE", "not_polled")]
    finally:
        release.set()
        reader.close()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12")
def test_panel_commands_leave_nones_reference_count_alone(tmp_path, pty_pair, panels):
    """libosdp 3.2.9's binding releases the second item of the tuple a command callback returns
    instead of the tuple: returning a shared ``(0, None)`` cost None a reference per command, and
    CPython 3.11 aborts when None's count reaches zero (a door with a chatty panel, in weeks)."""
    import gc

    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    reader = _reader(path, tmp_path / "scbk")
    try:
        panel = _online(panels, master, reader)
        gc.collect()  # earlier tests' garbage is not freed in the middle of the count
        gc.disable()
        before, n = sys.getrefcount(None), 150
        for _ in range(n):
            assert panel.buzzer()
        assert wait_until(lambda: reader.state.commands >= n, 60)
        lost = before - sys.getrefcount(None)
        assert lost < n // 3, f"None lost {lost} references over {n} panel commands"
    finally:
        gc.enable()
        reader.close()


def test_close_called_from_on_output_loses_no_verdict(tmp_path, pty_pair, panels):
    """The door's output callback stops the reader (a shutdown racing the panel): close() returns
    to it at once, and the grant that output answered is still recorded afterwards; a second
    close() from another thread (the daemon's shutdown) returns only once it is. A read the
    panel polled just before, its window cut short, says so (``reader_stopped``)."""
    import threading

    master, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts, returned, written, readers = [], threading.Event(), threading.Event(), []
    second_sent, second_polled = threading.Event(), threading.Event()

    def stop_on_output(_cmd) -> None:
        assert readers[0].card_read(Credential("H10301", 4, 47), "event-2")
        second_sent.set()
        assert second_polled.wait(30)
        readers[0].close(settle_s=0.2)
        returned.set()

    def slow(v) -> None:  # the write finishes when the test says so
        written.wait(30)
        verdicts.append(v)

    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=5.0, on_verdict=slow,
                     on_output=stop_on_output)
    readers.append(reader)
    try:
        panel = _online(panels, master, reader)
        assert reader.card_read(Credential("H10301", 4, 46), "event-1")
        assert panel.next_event() is not None
        assert panel.output(5)
        assert second_sent.wait(30)
        assert panel.next_event() is not None  # event-2 reached the panel
        second_polled.set()
        assert returned.wait(30)
        shutdown = threading.Thread(target=reader.close)  # the shutdown's own call
        shutdown.start()
        shutdown.join(1.0)
        assert shutdown.is_alive()  # it waits: the grant is still being written
        written.set()
        shutdown.join(30)
        assert [(v.decision_event_id, v.verdict, v.reason) for v in verdicts] == \
            [("event-1", "GRANTED", None), ("event-2", "NO_RESPONSE", "reader_stopped")]
        assert not reader._recorder.thread.is_alive()
    finally:
        written.set()
        second_polled.set()
        reader.close()


def test_close_waits_for_a_slow_recorder_while_it_makes_progress(tmp_path, pty_pair):
    """Three verdicts, each taking 2.5 s to write (a slow disk): longer in all than one
    wait of verdict_timeout_s + 5 s, but the recorder keeps going, so close() keeps waiting and
    all three are written before it returns (the daemon closes the outbox right after)."""
    import time

    _, path = pty_pair
    save_scbk(tmp_path / "scbk", KEY)
    verdicts = []

    def slow(v) -> None:
        time.sleep(2.5)  # the slow disk itself
        verdicts.append(v)

    reader = _reader(path, tmp_path / "scbk", verdict_timeout_s=0.2, on_verdict=slow)
    for i in range(3):  # nobody on the line: each closes NO_RESPONSE
        assert reader.card_read(Credential("H10301", 4, 50 + i), f"event-{i}")
    reader.close()
    assert [v.decision_event_id for v in verdicts] == ["event-0", "event-1", "event-2"]


def test_a_fault_while_taking_a_panel_command_does_not_crash_the_door(tmp_path):
    """libosdp's binding crashes the process when a command callback raises: the reader NAKs
    the command instead. Run in a child process, where a crash ends only the child."""
    out = _scenario("command_fault_scenario", tmp_path)
    assert out == {"command_reached_facelink": True, "alive": True}


def test_between_the_panels_key_and_the_restart_nothing_counts(tmp_path, pty_pair):
    """Once the panel's KEYSET is written and until libosdp runs again with it, the libosdp
    started in install mode is still on the line (a channel under the published key, or the new
    key without EnforceSecure): no card read is sent and no command obeyed in that window either.
    The restart is held back here to keep the window open."""
    master, path = pty_pair
    outputs: list = []
    reader = _reader(path, tmp_path / "scbk", install_mode=True, on_output=outputs.append)
    reader._enforce = lambda: None  # the restart never comes
    try:
        keyset = {"command": osdp.Command.Keyset, "type": 1, "data": KEY}
        assert reader._on_command(keyset) == (0, None)  # an ACK: the key is kept
        assert load_scbk(tmp_path / "scbk") == KEY and not reader.provisioned
        assert reader.send_card(Credential("H10301", 7, 4321), "event-1") is not None
        output = {"command": osdp.Command.Output, "output_no": 0, "control_code": 5, "timer_count": 30}
        assert reader._on_command(output) == (-1, None)  # a NAK
        assert not wait_until(lambda: outputs or reader.state.output, 1)
    finally:
        reader.close()


def test_the_panels_latest_key_is_the_one_libosdp_runs_with(tmp_path, pty_pair, panels):
    """A second KEYSET that libosdp's thread takes while the restart is stopping it (the thread
    ends only once its callback returns) is the key libosdp starts again with, as it is the key
    file's: never one key in the file and another enforced. The site's panel, with that key,
    then gets its secure channel."""
    master, path = pty_pair
    key_file = tmp_path / "scbk"
    second = bytes.fromhex("ffeeddccbbaa99887766554433221100")
    reader = _reader(path, key_file, install_mode=True)
    real_stop, real_start, started = reader._stop_pd, reader._start_pd, []

    def stop_with_a_keyset_in_flight():
        if not started:  # the restart's stop (close() stops it again later)
            reader._on_command({"command": osdp.Command.Keyset, "type": 1, "data": second})
        real_stop()

    def start(key):
        started.append(key)
        return real_start(key)

    reader._stop_pd, reader._start_pd = stop_with_a_keyset_in_flight, start
    try:
        installer = panels(master, KEY, enforce=False)
        assert wait_until(lambda: reader.provisioned)
        assert started == [second] and load_scbk(key_file) == second
        installer.close()
        site = panels(master, second)
        assert site.secure() and wait_until(lambda: reader.secure)
    finally:
        reader.close()
