"""Setup mistakes: the real `facelink-device` process exits 78 (systemd does not restart it) with
one line naming the key — never a traceback or a crash loop."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from broker import free_port


def run_door(tmp: Path, models_dir: Path, config: str, **env: str) -> tuple[int, str]:
    cfg = tmp / "door.toml"
    cfg.write_text(config)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
    clean.update({"FACELINK_MODELS__MODELS_DIR": str(models_dir), "FACELINK_MODELS__THREADS": "2",
                  "FACELINK_STORE__DATABASE": str(tmp / "facelink.db"),
                  "FACELINK_MQTT__PORT": str(free_port()), "FACELINK_CAMERA__SOURCE": str(tmp),
                  "PYTHONUNBUFFERED": "1", **env})
    proc = subprocess.run([sys.executable, "-m", "facelink.device.main", "--config", str(cfg)], env=clean,
                          capture_output=True, text=True, timeout=180)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture()
def door_collection(tmp_path, engine):
    """A collection exists, so the door gets as far as its MQTT, outbox and relay setup."""
    from facelink.enroll import faces
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    store = Store(tmp_path / "facelink.db")
    faces.create_collection(Context(store, lambda: engine), "door")
    store.close()


def garbage(tmp_path: Path, name: str) -> str:
    (tmp_path / name).write_text("not a certificate\n")
    return str(tmp_path / name)


MISTAKES = {
    "command relay without a command": ('[door]\nrelay = "command"\n', "door.command"),
    "client certificate without its key": ("[mqtt]\ntls_ca = \"{ca}\"\ntls_cert = \"{ca}\"\n", "mqtt.tls_key"),
    "key without its certificate": ("[mqtt]\ntls_ca = \"{ca}\"\ntls_key = \"{ca}\"\n", "mqtt.tls_cert"),
    "client certificate without TLS": ("[mqtt]\ntls_cert = \"{ca}\"\ntls_key = \"{ca}\"\n", "mqtt.tls_ca"),
    "missing tls_ca file": ('[mqtt]\ntls_ca = "/nonexistent/ca.crt"\n', "mqtt.tls_ca"),
    "password without a user name": ('[mqtt]\npassword = "s3cret"\n', "mqtt.username"),
    "frames_window below frames_required": ("[matching]\nframes_required = 4\nframes_window = 3\n",
                                             "matching.frames_window"),
    "sync without a trusted desk key": ("[sync]\nenabled = true\n", "fleet.trusted_keys"),
    "sync with an unknown on_stale": ('[sync]\non_stale = "maybe"\n', "sync.on_stale"),
    "a Similarity written on a 0-1 scale": ("[matching]\nsimilarity_threshold = 0.99\n",
                                            "matching.similarity_threshold"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_config_mistake_exits_78_naming_the_key(tmp_path, models_dir, name):
    text, key = MISTAKES[name]
    code, out = run_door(tmp_path, models_dir, text.format(ca=garbage(tmp_path, "ca.crt")))
    assert code == 78, out
    assert "Traceback" not in out
    (line,) = [ln for ln in out.splitlines() if key in ln]  # one line, naming the key
    assert "s3cret" not in out


@pytest.mark.skipif(importlib.util.find_spec("gpiozero") is not None, reason="gpiozero is installed here")
def test_gpio_relay_unavailable_exits_78(tmp_path, models_dir):
    code, out = run_door(tmp_path, models_dir, '[door]\nrelay = "gpio"\n')
    assert code == 78 and "Traceback" not in out, out
    (line,) = [ln for ln in out.splitlines() if "door.relay" in ln]
    assert "facelink[pi]" in line


def test_tls_ca_that_is_not_a_certificate_exits_78(tmp_path, models_dir, door_collection):
    code, out = run_door(tmp_path, models_dir, f'[mqtt]\ntls_ca = "{garbage(tmp_path, "ca.pem")}"\n')
    assert code == 78 and "Traceback" not in out, out
    assert len([ln for ln in out.splitlines() if "mqtt.tls_ca" in ln]) == 1


def test_unwritable_outbox_exits_78(tmp_path, models_dir, door_collection):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out = run_door(tmp_path, models_dir, f'[mqtt]\noutbox = "{blocker / "outbox.db"}"\n')
    assert code == 78 and "Traceback" not in out, out
    assert len([ln for ln in out.splitlines() if "mqtt.outbox" in ln]) == 1


def test_sync_trusted_key_that_is_not_a_key_exits_78(tmp_path, models_dir):
    """Also: a sync door starts without its collection (the desk's snapshot brings it), so it gets
    as far as reading the desk's key."""
    key = garbage(tmp_path, "desk.pub")
    code, out = run_door(tmp_path, models_dir, f'[sync]\nenabled = true\n[fleet]\ntrusted_keys = ["{key}"]\n')
    assert code == 78 and "Traceback" not in out, out
    assert len([ln for ln in out.splitlines() if "desk.pub" in ln and "not a PEM public key" in ln]) == 1
