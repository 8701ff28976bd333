"""Badge readers: what keyboard-wedge and serial readers send, a serial reader over a pty, the MQTT
topic on a real broker, and the unsafe combination refused."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import struct
import termios
import time
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest

from facelink.access.badges import BadgeSources, key_char, parse_typed
from facelink.config import load_settings
from facelink.errors import ConfigError, InvalidParameterException

from .panel import open_pty, wait_until


@pytest.mark.parametrize("typed,expected", [
    ("H10301:18:12345", "H10301:18:12345"),
    ("18:12345", "H10301:18:12345"),
    (str((18 << 16) | 12345), "H10301:18:12345"),
    ("00001001000110000001110011", "H10301:18:12345"),
])
def test_what_readers_type(typed, expected):
    assert str(parse_typed(typed, "H10301")) == expected


@pytest.mark.parametrize("typed", ["", "abc", "00001001000110000001110010", "99999999999",
                                   "H10301:\u00b2:1", "\u00b2:1", "\u0663\u0663", "H10301:18:\u0661\u0662",
                                   "H10301:18:" + "9" * 5000])
def test_garbage_is_refused(typed):
    """Unicode digits ("²", Arabic-Indic) pass str.isdigit(): they are refused like any garbage,
    and so is a number too long for int()."""
    with pytest.raises(InvalidParameterException):
        parse_typed(typed, "H10301")


def test_a_reader_format_outside_the_known_ones_is_a_config_error(monkeypatch):
    from facelink.errors import ConfigError as Refused

    monkeypatch.setenv("FACELINK_CREDENTIALS__EVDEV_FORMAT", "h10301")
    with pytest.raises(Refused):
        load_settings()


def test_key_names():
    assert [key_char(k) for k in ("KEY_1", "KEY_KP7", "KEY_ENTER", "KEY_A", "KEY_SEMICOLON")] == \
        ["1", "7", "\n", "", ":"]


def _settings(**credentials):
    s = load_settings()
    s.matching.mode = "card_and_face"
    for k, v in credentials.items():
        setattr(s.credentials, k, v)
    return s


def _repoint(link, target):
    """Point ``link`` at ``target`` atomically, as udev does with /dev/serial/by-id/... links."""
    fresh = link.with_name(link.name + ".new")
    os.symlink(target, fresh)
    os.replace(fresh, link)


def _fds_open_on(fd):
    """How many of this process's fds are open on the tty ``fd`` is (the test's own and the
    reader's): the tty's path is gone once its master closes, so compare devices, not names."""
    rdev, count = os.fstat(fd).st_rdev, 0
    for n in os.listdir("/proc/self/fd"):
        try:
            st = os.stat(f"/proc/self/fd/{n}")
        except OSError:  # listdir's own fd, already closed
            continue
        count += stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev
    return count


def _waiting(fd):
    """Bytes in a tty's input queue that nobody has read yet."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_serial_reader_over_a_pty(tmp_path):
    """Reads badges; unplugged, it is named on health (badges_failed), its fd is released and it
    is reopened from the configured path once the device is back, with no restart of the door."""
    master, slave, path = open_pty()
    link = tmp_path / "usb-reader-if00"
    _repoint(link, path)
    masters, slaves = [master], [slave]
    sources = BadgeSources(_settings(sources=["serial"], serial_device=str(link)), reopen_backoff_s=(0.05, 0.2))
    try:
        sources.start()
        assert sources.serial_in_sync.wait(10)  # lines that begin after this are read whole
        os.write(master, b"H10301:18:12345\r\nnot-a-card\n0000100100011000000111001")
        os.write(master, b"1\n")  # a line may arrive in pieces
        os.write(master, "H10301:\u00b2:1\n".encode())  # a Unicode digit: refused, the reader goes on
        os.write(master, b"18:777\n")
        got = []
        assert wait_until(lambda: got.extend(sources.drain()) or len(got) >= 3, 10)
        assert [(r.credential, r.source) for r in got] == [("H10301:18:12345", "serial")] * 2 + \
            [("H10301:18:777", "serial")]
        assert sources.rejected == 2 and sources.failed == {}
        assert sources.health()["badges_reopens"] == {}
        assert _fds_open_on(slave) == 2  # the test's slave and the reader's

        os.write(master, b"18:1\nH10301:18:99")  # a badge and half a badge, read, then unplugged
        assert wait_until(lambda: got.extend(sources.drain()) or len(got) >= 4, 10)
        assert got[3].credential == "H10301:18:1" and wait_until(lambda: _waiting(slave) == 0, 10)
        os.close(masters.pop())
        assert wait_until(lambda: "serial" in sources.failed, 10)
        assert "hung up" in sources.health()["badges_failed"]["serial"]
        assert wait_until(lambda: _fds_open_on(slave) == 1, 10)  # the dead line's fd is released
        assert sources.health()["badges_failed"].get("serial")  # still down while nothing is there

        master, slave, path2 = open_pty()  # plugged in again: a new tty behind the same link
        masters.append(master)
        slaves.append(slave)
        _repoint(link, path2)
        assert wait_until(lambda: "serial" not in sources.failed, 10)
        health = sources.health()
        assert health["badges_failed"] == {} and health["badges_reopens"] == {"serial": 1}
        assert sources.serial_in_sync.wait(10)
        os.write(master, b"345\n18:4242\n")  # the half badge from before is gone, not joined
        got = []
        assert wait_until(lambda: got.extend(sources.drain()) or len(got) >= 2, 10)
        assert [(r.credential, r.source) for r in got] == [("H10301:0:345", "serial"),
                                                           ("H10301:18:4242", "serial")]
        assert _fds_open_on(slave) == 2
        thread = sources.threads["serial"]
        sources.close()  # closes the reopened fd, not the first one
        assert _fds_open_on(slave) == 1
        thread.join(5)
        assert not thread.is_alive() and sources.failed == {}  # closing is not a failure
    finally:
        sources.close()
        for fd in masters + slaves:
            os.close(fd)


def test_close_during_the_back_off_ends_the_reader_at_once(tmp_path):
    """A reader that is down waits between tries; close() ends that wait (no thread left behind)."""
    master, slave, path = open_pty()
    link = tmp_path / "usb-reader-if00"
    _repoint(link, path)
    sources = BadgeSources(_settings(sources=["serial"], serial_device=str(link)), reopen_backoff_s=(60.0, 60.0))
    try:
        sources.start()
        thread = sources.threads["serial"]
        os.close(master)
        master = None
        assert wait_until(lambda: "serial" in sources.failed, 10)
        assert wait_until(lambda: _fds_open_on(slave) == 1, 10)  # in the back-off now, fd released
        began = time.monotonic()
        sources.close()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - began < 2
        assert sources.health()["badges_reopens"] == {}
    finally:
        sources.close()
        if master is not None:
            os.close(master)
        os.close(slave)


def test_close_lets_the_serial_reader_release_its_own_fd(tmp_path, monkeypatch):
    """close() while the serial reader is inside a read: the fd is not closed under it (a closed
    fd number is reused by the next open, and the read would then take that file's bytes); the
    reader finishes its read, sees the stop and releases the fd itself."""
    import threading

    from facelink.access import badges

    master, slave, path = open_pty()
    in_read, proceed, still_ours = threading.Event(), threading.Event(), []
    real = badges.read_available

    def held_read(fd, *args, **kwargs):
        if not in_read.is_set():
            in_read.set()
            proceed.wait(10)
            still_ours.append(_is_open(fd))
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(badges, "read_available", held_read)
    sources = BadgeSources(_settings(sources=["serial"], serial_device=path), reopen_backoff_s=(60.0, 60.0))
    try:
        sources.start()
        assert in_read.wait(10)
        closer = threading.Thread(target=sources.close)
        closer.start()
        closer.join(0.3)  # the old close() closed the fd and returned at once
        proceed.set()
        closer.join(10)
        assert still_ours == [True] and not closer.is_alive()
        assert not sources.threads["serial"].is_alive() and _fds_open_on(slave) == 1 and sources.failed == {}
    finally:
        proceed.set()
        sources.close()
        os.close(master)
        os.close(slave)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@contextmanager
def mqtt_badges(broker, client_id: str, probe: bytes):
    """Badge reads from the MQTT source, with a publisher: yields (sources, publisher, the reads
    of ``probe``, published until the door's subscription is up)."""
    s = _settings(sources=["mqtt"])
    s.mqtt.port = broker.port
    sources = BadgeSources(s)
    sources.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        got = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:  # until the door's subscription is up
            pub.publish("facelink/door-1/credential", probe, qos=1)
            time.sleep(0.5)
            got += sources.drain()
        yield sources, pub, got
    finally:
        pub.disconnect()
        pub.loop_stop()
        sources.close()


def test_mqtt_topic(broker):
    probe = json.dumps({"credential": "H10306:4242:65000"}).encode()
    with mqtt_badges(broker, "badge-pub", probe) as (sources, pub, got):
        assert got and got[0].credential == "H10306:4242:65000" and got[0].source == "mqtt"
        pub.publish("facelink/door-1/credential", b"\xff\xfe", qos=1).wait_for_publish(5)
        assert wait_until(lambda: sources.rejected >= 1, 10)


def test_mqtt_badges_cannot_open_the_door_alone():
    s = _settings(sources=["mqtt"])
    s.matching.mode = "card_or_face"
    with pytest.raises(ConfigError, match="card_or_face"):
        BadgeSources(s)
    with pytest.raises(ConfigError, match="serial_device"):
        BadgeSources(_settings(sources=["serial"])).start()
