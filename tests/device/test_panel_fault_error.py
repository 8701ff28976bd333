"""An access-panel output that carries nothing to the panel is an alarm, not only a health
field: the real daemon as the OSDP reader (install mode) of a libosdp panel on a pty that
provisions it with the published install key — refused, so the reader sends no card reads —
publishes ERROR PanelError naming why, once per 30 s however often the loop checks, while the
fault lasts. Before, only health's ``osdp_fault`` said it (and a failed restart with the
panel's key was retried with no limit and no alarm)."""

from __future__ import annotations

import os
import time

import pytest

from facelink.device.daemon import ERROR_REPEAT_S
from tests.waiting import wait_until

from .conftest import Watcher, door_daemon

SCBK_D = bytes(range(0x30, 0x40))  # OSDP's published install key


def _errors(watcher: Watcher) -> list[dict]:
    return [d for d in watcher.payloads("door-1/decision") if d["decision"] == "ERROR"]


def test_a_panel_output_that_sends_nothing_is_published_as_error(tmp_path, broker, make_settings, engine):
    panel_mod = pytest.importorskip("tests.access.panel")
    master, slave, path = panel_mod.open_pty()
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)},
                             door={"output": "osdp"},
                             osdp={"device": path, "scbk_file": tmp_path / "scbk", "install_mode": True})
    daemon = door_daemon(settings, engine)
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="panel-fault-watcher")
    panel = None
    try:
        assert watcher.barrier()
        daemon.pump.start()
        now = time.monotonic()
        daemon._housekeeping(now)
        assert daemon.panel.fault is None and daemon.stats.errors == 0  # waiting for its key: no fault
        panel = panel_mod.Panel(master, SCBK_D, enforce=False)  # "provisions" it with the install key
        assert wait_until(lambda: daemon.panel.fault is not None, 30)
        assert "install key" in daemon.health()["osdp_fault"]
        for _ in range(20):  # every loop turn checks; the fault is said once per ERROR_REPEAT_S
            daemon._housekeeping(now)
        assert watcher.wait_for(lambda: _errors(watcher), 30)
        (error,) = _errors(watcher)
        assert error["reason"].startswith("PanelError: OSDP reader:") and "install key" in error["reason"]
        daemon._housekeeping(now + ERROR_REPEAT_S)  # still faulty 30 s later: said again
        assert watcher.wait_for(lambda: len(_errors(watcher)) == 2, 30)
        assert daemon.stats.errors == 2
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=5)
        if panel is not None:
            panel.close()
        os.close(master)
        os.close(slave)
