"""The real door daemon as an OSDP reader: a libosdp Control Panel (the access panel) on a pty,
secure channel on, receives the granted user's badge; an unknown face sends nothing; the panel's
green LED is recorded as its verdict beside FaceLink's decision on MQTT."""

from __future__ import annotations

import os
import shutil

import pytest

from facelink.access.scbk import save_scbk
from facelink.enroll import credentials
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.mqtt.schema import PanelVerdictMessage

from .conftest import Watcher

KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")


def test_granted_face_becomes_a_card_read_at_the_panel(tmp_path, broker, faces_dir, enroll, engine, start_door):
    panel_mod = pytest.importorskip("tests.access.panel")
    enroll(faces_dir, "feat_man", "photo.jpg")
    enroll(faces_dir, "obama", "1.jpg")
    with Store(tmp_path / "facelink.db") as store:
        ctx = Context(store, lambda: engine)
        credentials.put_user_credential(ctx, "door", "feat_man", "H10301:42:31337")
        credentials.put_user_credential(ctx, "door", "obama", "H10301:42:1")
    save_scbk(tmp_path / "scbk", KEY)
    feed = tmp_path / "feed"
    feed.mkdir()
    for i, f in enumerate(sorted((faces_dir / "people/pexels_woman").iterdir())):
        shutil.copy(f, feed / f"1-unknown-{i}.jpg")
    for i in range(4):  # the same person stays in view a while: the panel has time to answer
        shutil.copy(faces_dir / "video/feat_man.mp4", feed / f"2-known-{i}.mp4")
    master, slave, path = panel_mod.open_pty()
    panel = panel_mod.Panel(master, KEY)
    watcher = Watcher(broker.port, ["facelink/+/decision", "facelink/+/panel"], client_id="osdp-watcher")
    try:
        door = start_door(broker.port, str(feed), door__output="osdp", osdp__device=path,
                          osdp__scbk_file=str(tmp_path / "scbk"), osdp__verdict_timeout_s=10)
        assert panel.secure(timeout=90), door.log()
        event = panel.next_event(timeout=120)
        assert event is not None, door.log()
        bits = [(event["data"][i // 8] >> (7 - i % 8)) & 1 for i in range(event["length"])]
        assert len(bits) == 26 and sum(bits[:13]) % 2 == 0 and sum(bits[13:]) % 2 == 1
        value = int("".join(map(str, bits[1:25])), 2)
        assert (value >> 16, value & 0xFFFF) == (42, 31337)
        assert panel.led(panel_mod.osdp.CommandLEDColor.Green)
        assert watcher.wait_for(lambda: watcher.payloads("/panel"), 30), door.log()
        assert door.proc.wait(120) == 0, door.log()
        assert panel.next_event(timeout=1) is None  # one card read: the unknown face sent nothing
        assert watcher.wait_for(lambda: len(watcher.payloads("/decision")) >= 2, 20)
        decisions = watcher.payloads("/decision")
        assert [d["decision"] for d in decisions] == ["DENIED_UNKNOWN", "GRANTED"], door.log()
        verdict = watcher.payloads("/panel")[0]
        assert verdict["verdict"] == "GRANTED" and verdict["credential"] == "H10301:42:31337"
        assert verdict["decision_event_id"] == decisions[1]["event_id"]
        assert PanelVerdictMessage.model_validate(verdict).payload() == verdict  # what the logger accepts
    finally:
        watcher.close()
        panel.close()
        os.close(master)
        os.close(slave)
