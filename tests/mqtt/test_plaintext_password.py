"""A broker password never crosses the network in clear by accident: a password without TLS to a
broker that is not on this machine is refused unless mqtt.insecure_plaintext says so (as
`facelink serve` refuses plain HTTP off loopback without --insecure-http). Before, the door, the
desk and the logger sent it in the CONNECT packet in clear, silently — and the broker ACL that the
fleet's security rests on is keyed on those user names."""

from __future__ import annotations

import pytest

from facelink.config import load_settings
from facelink.errors import ConfigError


@pytest.mark.parametrize("host", ["broker.example.org", "192.0.2.10", "2001:db8::1"])
def test_a_password_without_tls_to_another_machine_is_refused(host):
    with pytest.raises(ConfigError, match=r"mqtt\.tls_ca: required with a password"):
        load_settings(mqtt={"host": host, "username": "door-1", "password": "s3cret-door"})


def test_the_refusal_never_shows_the_password():
    with pytest.raises(ConfigError) as err:
        load_settings(mqtt={"host": "broker.example.org", "username": "door-1", "password": "s3cret-door"})
    assert "s3cret-door" not in str(err.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_a_password_without_tls_on_this_machine_is_allowed(host):
    s = load_settings(mqtt={"host": host, "username": "door-1", "password": "s3cret-door"})
    assert s.mqtt.tls_ca is None


def test_an_explicit_insecure_setting_allows_it(tmp_path):
    s = load_settings(mqtt={"host": "broker.example.org", "username": "door-1", "password": "pw",
                            "insecure_plaintext": True})
    assert s.mqtt.insecure_plaintext


def test_a_user_name_alone_or_tls_is_not_refused(tmp_path):
    load_settings(mqtt={"host": "broker.example.org", "username": "door-1"})  # no secret to leak
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # only its existence is checked here
    load_settings(mqtt={"host": "broker.example.org", "username": "door-1", "password": "pw", "tls_ca": str(ca)})
