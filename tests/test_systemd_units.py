"""The unit files are well-formed and keep the hardening the README promises."""

from __future__ import annotations

import configparser
from pathlib import Path

UNITS = Path(__file__).resolve().parents[1] / "systemd"


def load(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(UNITS / name)
    return cp


def test_device_unit():
    svc = load("facelink-device.service")["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0
    assert svc["Restart"] == "on-failure" and svc["RestartPreventExitStatus"] == "78"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "User": "facelink", "ReadWritePaths": "/var/lib/facelink"}.items():
        assert svc[key] == value
    assert "video" in svc["SupplementaryGroups"].split()
    assert svc["ExecReload"].endswith("-HUP $MAINPID")


def test_logger_unit():
    svc = load("facelink-logger.service")["Service"]
    assert "facelink-logger" in svc["ExecStart"] and svc["ProtectSystem"] == "strict"


def test_serve_unit():
    svc = load("facelink-serve.service")["Service"]
    assert " serve " in svc["ExecStart"] and "--credentials /etc/facelink/serve-keys.toml" in svc["ExecStart"]
    assert "--host" not in svc["ExecStart"]  # loopback as shipped: opening it to the LAN is a decision
    assert "--insecure-http" not in svc["ExecStart"]
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes" and svc["User"] == "facelink"
    assert set(svc["RestartPreventExitStatus"].split()) == {"78", "8"}  # setup errors: no crash loop


def test_desk_publisher_unit():
    svc = load("facelink-desk-publish.service")["Service"]
    assert svc["ExecStart"].endswith("fleet publish") and svc["RestartPreventExitStatus"] == "78"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "UMask": "0077",
                       "User": "facelink", "ReadWritePaths": "/var/lib/facelink"}.items():
        assert svc[key] == value


def test_device_unit_lets_a_running_door_command_lock_the_door():
    """`systemctl stop/restart` while a door command (door.relay = "command") holds the lock
    released: systemd's default KillMode (control-group) sends SIGTERM to every process of the
    unit at once, so a command such as `unlock; sleep 3; lock` died before locking and the door
    stayed open (found in review). With KillMode=mixed only the daemon gets SIGTERM; its shutdown
    waits for the running command (CommandRelay.close), then flushes the outbox — all within
    TimeoutStopSec, after which systemd kills whatever is left."""
    from facelink.config import DoorSettings
    from facelink.config.access import OsdpSettings

    def longest(model, field: str) -> float:
        return next(m.le for m in model.model_fields[field].metadata if hasattr(m, "le"))

    svc = load("facelink-device.service")["Service"]
    assert svc.get("KillMode") == "mixed"
    verdict_wait = longest(OsdpSettings, "verdict_timeout_s")  # the OSDP reader waits for the panel's answer first
    command_wait = longest(DoorSettings, "pulse_s") + 10 + 1  # CommandRelay: pulse_s + grace_s, joined with 1 s more
    flush, will = 10, 3  # Daemon.shutdown: the outbox flush, then the MQTT client's offline
    assert int(svc["TimeoutStopSec"]) >= verdict_wait + command_wait + flush + will
