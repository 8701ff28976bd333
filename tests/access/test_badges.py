"""Badge readers: what keyboard-wedge and serial readers send, a serial reader over a pty, the MQTT
topic on a real broker, and the unsafe combination refused."""

from __future__ import annotations

import json
import os
import time

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


def test_serial_reader_over_a_pty():
    master, slave, path = open_pty()
    sources = BadgeSources(_settings(sources=["serial"], serial_device=path))
    try:
        sources.start()
        os.write(master, b"H10301:18:12345\r\nnot-a-card\n0000100100011000000111001")
        os.write(master, b"1\n")  # a line may arrive in pieces
        os.write(master, "H10301:\u00b2:1\n".encode())  # a Unicode digit: refused, the reader goes on
        os.write(master, b"18:777\n")
        got = []
        assert wait_until(lambda: got.extend(sources.drain()) or len(got) >= 3, 10)
        assert [(r.credential, r.source) for r in got] == [("H10301:18:12345", "serial")] * 2 + \
            [("H10301:18:777", "serial")]
        assert sources.rejected == 2 and sources.failed == {}
        os.close(master)  # the reader is unplugged: said on health (badges_failed), not a dead thread
        master = None
        assert wait_until(lambda: "serial" in sources.failed, 10)
    finally:
        sources.close()
        if master is not None:
            os.close(master)
        os.close(slave)


def test_mqtt_topic(broker):
    s = _settings(sources=["mqtt"])
    s.mqtt.port = broker.port
    sources = BadgeSources(s)
    sources.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="badge-pub")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        got = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:  # until the door's subscription is up
            pub.publish("facelink/door-1/credential", json.dumps({"credential": "H10306:4242:65000"}), qos=1)
            time.sleep(0.5)
            got += sources.drain()
        assert got and got[0].credential == "H10306:4242:65000" and got[0].source == "mqtt"
        pub.publish("facelink/door-1/credential", b"\xff\xfe", qos=1).wait_for_publish(5)
        assert wait_until(lambda: sources.rejected >= 1, 10)
    finally:
        pub.disconnect()
        pub.loop_stop()
        sources.close()


def test_mqtt_badges_cannot_open_the_door_alone():
    s = _settings(sources=["mqtt"])
    s.matching.mode = "card_or_face"
    with pytest.raises(ConfigError, match="card_or_face"):
        BadgeSources(s)
    with pytest.raises(ConfigError, match="serial_device"):
        BadgeSources(_settings(sources=["serial"])).start()
