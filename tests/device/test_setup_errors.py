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
    "a keepalive MQTT cannot carry": ("[mqtt]\nkeepalive_s = 70000\n", "mqtt.keepalive_s"),
    "an empty broker host": ('[mqtt]\nhost = ""\n', "mqtt.host"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_config_mistake_exits_78_naming_the_key(tmp_path, models_dir, name):
    text, key = MISTAKES[name]
    code, out = run_door(tmp_path, models_dir, text.format(ca=garbage(tmp_path, "ca.crt")))
    assert code == 78, out
    assert "Traceback" not in out
    (line,) = [ln for ln in out.splitlines() if key in ln]  # one line, naming the key
    assert "s3cret" not in out


@pytest.mark.parametrize("text,key", [('[door]\nrelay = "gpio"\n', "door"),
                                      ('[door]\noutput = "wiegand"\n', "wiegand")])
def test_gpio_output_unavailable_exits_78(tmp_path, models_dir, door_collection, text, key):
    """No GPIO here: without gpiozero the line says what to install, with it (tests install it)
    that there is no pin to drive (gpiozero finds no pin factory on this machine)."""
    code, out = run_door(tmp_path, models_dir, text)
    assert code == 78 and "Traceback" not in out, out
    (line,) = [ln for ln in out.splitlines() if f"{key}." in ln and ("facelink[pi]" in ln or "cannot use GPIO" in ln)]
    if importlib.util.find_spec("gpiozero") is not None:
        assert "pin factory" in line


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


def _models_with_calibration(tmp: Path, models_dir: Path, text: str) -> Path:
    """The provisioned models (linked, not copied) with an operator's calibration.toml."""
    local = tmp / "models"
    local.mkdir()
    for f in models_dir.iterdir():
        if f.name != "calibration.toml":
            (local / f.name).symlink_to(f)
    (local / "calibration.toml").write_text(text)
    return local


DAMAGED_TAILS = {
    "no points": "cosine = []\nat_or_above = []",
    "counts that rise again": "cosine = [0.3, 0.4, 0.5]\nat_or_above = [50, 10, 20]",
    "a count above the pairs": "cosine = [0.3, 0.4]\nat_or_above = [5000, 10]",
    "cosines that do not rise": "cosine = [0.4, 0.3]\nat_or_above = [50, 10]",
}


@pytest.mark.parametrize("name", list(DAMAGED_TAILS))
def test_a_damaged_calibration_file_exits_78_naming_it(tmp_path, models_dir, engine, name):
    """An operator's calibration.toml whose impostor tail the risk arithmetic cannot use (it used
    to crash the door with an IndexError or a math domain error) is a setup error."""
    text = (f'[calibration."{engine.model_version}"]\na = 20.0\nb = -6.0\nfitted_on = "edited"\n\n'
            f'[calibration."{engine.model_version}".impostor_tail]\npairs = 1000\n{DAMAGED_TAILS[name]}\n')
    local = _models_with_calibration(tmp_path, models_dir, text)
    code, out = run_door(tmp_path, local, "")
    assert code == 78 and "Traceback" not in out, out
    assert len([ln for ln in out.splitlines() if str(local / "calibration.toml") in ln]) == 1


def test_a_refused_re_fit_names_its_file_and_the_way_back(tmp_path, models_dir, engine, door_collection):
    """An old re-fit without an impostor tail and a threshold under 50: exit 78, and the message
    says which file holds that calibration and that removing it restores the shipped one."""
    text = f'[calibration."{engine.model_version}"]\na = 20.0\nb = -6.0\nfitted_on = "an old re-fit"\n'
    local = _models_with_calibration(tmp_path, models_dir, text)
    code, out = run_door(tmp_path, local, "[matching]\nsimilarity_threshold = 45\n")
    assert code == 78 and "Traceback" not in out, out
    (line,) = [ln for ln in out.splitlines() if "matching.similarity_threshold" in ln]
    assert str(local / "calibration.toml") in line and "remove that file" in line
    (local / "calibration.toml").unlink()  # back to the shipped calibration, whose measured floor is 45.8
    code, out = run_door(tmp_path, local, "[matching]\nsimilarity_threshold = 45\n")
    assert code == 78 and "it is below 45.8" in out and str(local / "calibration.toml") not in out
