"""A broker whose TLS certificate does not verify is refused, and the refusal is said in the log.

Before, the door refused it (paho: CERT_REQUIRED and check_hostname) but said nothing at all: the
certificate error went into paho's retry loop unlogged, and the only line was the pump's
"broker unreachable" — an impostor broker (or an expired or mis-issued certificate) was invisible."""

from __future__ import annotations

import logging
import shutil

import pytest
from broker import Broker, mosquitto_path
from broker import openssl as _openssl

from facelink.config.settings import MqttSettings
from facelink.mqtt.client import MqttClient

from ..waiting import wait_until

pytestmark = pytest.mark.skipif(mosquitto_path() is None or shutil.which("openssl") is None,
                                reason="needs mosquitto and openssl")


@pytest.fixture()
def tls_broker(tmp_path):
    """mosquitto with TLS: its certificate is signed by ca.crt but names only other.example."""
    d = tmp_path / "pki"
    d.mkdir()
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=other.example", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:other.example\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)
    broker = Broker(tmp_path / "broker", mosquitto_extra=(
        f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n")).start()
    yield broker, d
    broker.stop()


@pytest.mark.parametrize("ca", ["ca.crt", "other-ca.crt"], ids=["wrong-host", "untrusted-ca"])
def test_a_certificate_that_does_not_verify_is_refused_and_logged(tls_broker, ca, caplog):
    broker, pki = tls_broker
    caplog.set_level(logging.INFO, logger="facelink.mqtt.client")
    client = MqttClient(MqttSettings(host="127.0.0.1", port=broker.port, tls_ca=pki / ca),
                        client_id=f"tls-probe-{ca}")
    try:
        assert not client.wait_connected(3)  # refused: no insecure fallback
        wait_until(lambda: "certificate verify failed" in caplog.text, 5)  # asserted below
    finally:
        client.stop()
    assert not any("MQTT connected" in r.getMessage() for r in caplog.records)
    refusals = [r for r in caplog.records if "certificate verify failed" in r.getMessage()]
    assert refusals, caplog.text  # said, not silent
    assert refusals[0].levelno >= logging.ERROR
    assert len(refusals) == 1  # said once per reason, not on every retry
