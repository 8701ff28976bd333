"""TLS and username/password against a real mosquitto; a wrong password never loses a decision."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import pytest
from broker import Broker, mosquitto_path
from broker import openssl as _openssl

pytestmark = pytest.mark.skipif(mosquitto_path() is None or shutil.which("openssl") is None
                                or shutil.which("mosquitto_passwd") is None,
                                reason="needs mosquitto, mosquitto_passwd and openssl")


@pytest.fixture()
def secure_broker(tmp_path):
    """mosquitto with TLS (own CA) and a password file; anonymous clients refused."""
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=FaceLink test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "door-1", "s3cret-door"], check=True)
    extra = (f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
             f"password_file {d / 'passwd'}\n")
    broker = Broker(tmp_path / "broker", mosquitto_extra=extra, allow_anonymous=False).start()
    yield broker, d
    broker.stop()


def test_tls_and_password(tmp_path, secure_broker, models_dir, faces_dir, enroll, start_door):
    broker, pki = secure_broker
    enroll(faces_dir, "feat_man", "photo.jpg")
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       mqtt__host="127.0.0.1", mqtt__tls_ca=str(pki / "ca.crt"), mqtt__username="door-1",
                       mqtt__password="s3cret-door")
    assert door.proc.wait(120) == 0, door.log()
    assert "MQTT connected" in door.log()
    assert "s3cret-door" not in door.log()  # secrets never logged
    outbox = sqlite3.connect(tmp_path / "outbox.db")
    assert outbox.execute("SELECT count(*) FROM events").fetchone()[0] == 0  # delivered over TLS


def test_wrong_password_keeps_decisions(tmp_path, secure_broker, models_dir, faces_dir, enroll, start_door):
    broker, pki = secure_broker
    enroll(faces_dir, "feat_man", "photo.jpg")
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       mqtt__tls_ca=str(pki / "ca.crt"), mqtt__username="door-1", mqtt__password="not-the-pw-9f3k")
    assert door.proc.wait(120) == 0, door.log()
    assert "refused" in door.log() and "not-the-pw-9f3k" not in door.log()
    assert [d for d, _, _ in door.decisions()] == ["GRANTED"]
    outbox = sqlite3.connect(tmp_path / "outbox.db")
    assert outbox.execute("SELECT count(*) FROM events").fetchone()[0] == 1  # kept for later, not lost
