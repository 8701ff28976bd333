"""A private MQTT broker on a loopback port, for the demo and the tests.

Debian's mosquitto when installed (anonymous access allowed on 127.0.0.1 only), else the
pure-Python amqtt broker. Never listens on anything but loopback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return True
        time.sleep(0.05)
    return False


def openssl(*args: str, cwd) -> None:
    """Run ``openssl`` (certificates for the TLS brokers of the tests) in ``cwd``."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None)


class Broker:
    """Start with ``start()``, stop with ``stop()``; ``restart()`` keeps the same port."""

    def __init__(self, workdir: Path, port: int | None = None, *, prefer: str = "mosquitto",
                 mosquitto_extra: str = "", allow_anonymous: bool = True) -> None:
        """``mosquitto_extra``: more listener settings (TLS files, password_file) for mosquitto."""
        self.mosquitto_extra = mosquitto_extra
        self.allow_anonymous = allow_anonymous
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.kind = "mosquitto" if prefer == "mosquitto" and mosquitto_path() else "amqtt"
        self._proc: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            as_root = "user root\n" if os.geteuid() == 0 else ""  # keep access to workdir
            anonymous = "true" if self.allow_anonymous else "false"
            conf.write_text(f"{as_root}listener {self.port} {LOOPBACK}\nallow_anonymous {anonymous}\n"
                            f"{self.mosquitto_extra}"
                            f"persistence true\npersistence_location {self.workdir}/\n"
                            "log_dest stderr\nlog_type error\nlog_type warning\n")
            return [mosquitto_path() or "mosquitto", "-c", str(conf)]
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: {LOOPBACK}:{self.port}\n"
                        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                        "    allow_anonymous: true\n  amqtt.plugins.sys.broker.BrokerSysPlugin:\n"
                        "    sys_interval: 0\n")
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]

    def start(self, timeout: float = 15.0) -> Broker:
        log = open(self.workdir / f"{self.kind}.log", "ab")
        self._proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        if not _wait_listening(self.port, timeout):
            self.stop()
            raise RuntimeError(f"{self.kind} did not start on {LOOPBACK}:{self.port} "
                               f"(see {self.workdir / (self.kind + '.log')})")
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
