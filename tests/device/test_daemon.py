"""The door daemon end to end: real models, real faces, real SQLite, a real MQTT broker."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest

from facelink.audit.logger import AuditLog
from facelink.device import scan
from facelink.mqtt import wall_clock
from tests.waiting import wait_until

from .conftest import Watcher


def _poll(predicate, timeout: float) -> bool:
    return wait_until(predicate, timeout, interval=0.2)


# A decision on every frame of a looped feed of still photos: these tests are about delivery, and a
# feed of stills is exactly what FROZEN_FEED refuses (a one-frame track is never live), so it is off.
FAST = {"matching__frames_required": 1, "matching__frames_window": 1, "matching__cooldown_s": 0,
        "matching__track_max_age_s": 0, "liveness__enabled": "false"}


def test_known_user_granted_unknown_denied(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    enroll(faces_dir, "feat_man", "photo.jpg")
    watcher = Watcher(broker.port, ["facelink/+/decision", "facelink/+/status", "facelink/+/health"])
    feed = tmp_path / "feed"
    feed.mkdir()
    shutil.copy(faces_dir / "video/feat_man.mp4", feed / "1-known.mp4")
    for i, f in enumerate(sorted((faces_dir / "people/pexels_woman").iterdir())):
        shutil.copy(f, feed / f"2-unknown-{i}.jpg")
    door = start_door(broker.port, str(feed))
    assert door.proc.wait(120) == 0, door.log()
    assert watcher.wait_for(lambda: len(watcher.payloads("/decision")) >= 2, 20)
    decisions = watcher.payloads("/decision")
    assert [d["decision"] for d in decisions] == ["GRANTED", "DENIED_UNKNOWN"], door.log()
    granted, denied = decisions
    assert granted["user_id"] == "feat_man" and granted["similarity"] >= 99.0
    assert granted["external_image_id"] == "feat_man-badge" and granted["frames_matched"] >= 3
    assert granted["schema"] == "facelink.decision/1" and granted["device_id"] == "door-1"
    assert denied["user_id"] is None and denied["similarity"] < 99.0
    assert all("image" not in k for d in decisions for k in d if k != "external_image_id")
    synced = wall_clock.synchronized()  # what the kernel says here: each decision says it when false
    assert [d.get("clock_synchronized") for d in decisions] == [False if synced is False else None] * 2
    assert watcher.raw("/status")[-1] == b"offline"  # clean stop publishes offline
    assert watcher.wait_for(lambda: watcher.payloads("/health"), 5)
    health = watcher.payloads("/health")[-1]
    assert scan.kernel_isa() is not None  # the compiled int8 scan, and health says which
    assert health["collection_scan"]["kernel"] == scan.kernel_isa()
    assert health["collection_scan"]["blas_threads"] == 1  # numpy's BLAS cannot spin on the scan's core
    # before READY the daemon gave back the heap that loading the models freed (SFace's parsed
    # ONNX file alone is ~32 MiB), and health says how much and what the process now holds
    assert health["heap_released_mib"] >= 5 and 0 < health["rss_mib"] < 1024
    assert health["clock_synchronized"] is synced
    watcher.close()


def test_broker_outage_delivers_every_decision_once(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    if broker.kind != "mosquitto":
        pytest.skip("needs mosquitto: the logger's persistent session must survive the broker restart")
    enroll(faces_dir, "obama", "1.jpg")
    feed = tmp_path / "feed"
    feed.mkdir()
    shutil.copy(faces_dir / "people/obama/2.jpg", feed / "a.jpg")
    shutil.copy(faces_dir / "people/biden/1.jpg", feed / "b.jpg")
    audit_db = tmp_path / "audit.db"
    logger_log = tmp_path / "logger.log"
    with open(logger_log, "w") as out:
        logger = subprocess.Popen(
            [sys.executable, "-m", "facelink.audit.logger", "--db", str(audit_db), "run", "--port", str(broker.port)],
            stdout=subprocess.DEVNULL, stderr=out)
    try:
        assert _poll(lambda: "/decision" in logger_log.read_text(), 60), logger_log.read_text()  # subscribed
        door = start_door(broker.port, str(feed), camera__loop="true", **FAST)
        assert door.wait_for(lambda: len(door.decisions()) >= 5, 60), door.log()
        broker.stop()
        made_before = len(door.decisions())
        assert door.wait_for(lambda: len(door.decisions()) >= made_before + 20, 60)  # deciding offline
        outbox = sqlite3.connect(tmp_path / "outbox.db")
        assert outbox.execute("SELECT count(*) FROM events").fetchone()[0] > 0  # stored, not dropped
        stored = outbox.execute("SELECT count(*) FROM events").fetchone()[0]
        broker.start()
        assert _poll(lambda: outbox.execute("SELECT count(*) FROM events").fetchone()[0] < stored, 60)  # back on
        assert door.stop(signal.SIGTERM) == 0, door.log()
        assert outbox.execute("SELECT count(*) FROM events").fetchone()[0] == 0  # SIGTERM flushed
        made = [event for _, _, event in door.decisions()]
        assert len(made) == len(set(made))
        audit = AuditLog(audit_db)
        _poll(lambda: len(audit.query()) >= len(made), 30)
        logged = [row["event_id"] for row in audit.query()]
        assert sorted(logged) == sorted(made)  # every decision, exactly once per event id
        assert {row["decision"] for row in audit.query()} == {"GRANTED", "DENIED_UNKNOWN"}
        audit.close()
    finally:
        logger.terminate()
        logger.wait(10)


def test_last_will_when_killed(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    enroll(faces_dir, "obama", "1.jpg")
    watcher = Watcher(broker.port, ["facelink/door-1/status"], client_id="lwt-watcher")
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       camera__loop="true", mqtt__keepalive_s=5)
    assert watcher.wait_for(lambda: b"online" in watcher.raw("/status"), 60), door.log()
    door.stop(signal.SIGKILL)
    assert watcher.wait_for(lambda: watcher.raw("/status")[-1:] == [b"offline"], 30)
    watcher.close()


def test_enrollment_during_run_takes_effect(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    enroll(faces_dir, "obama", "1.jpg")
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       camera__loop="true", **FAST)
    assert door.wait_for(lambda: any(d == "DENIED_UNKNOWN" for d, _, _ in door.decisions()), 60), door.log()
    enroll(faces_dir, "feat_man", "photo.jpg")
    assert door.wait_for(lambda: any(d == "GRANTED" for d, _, _ in door.decisions()), 30), door.log()
    assert [u for d, u, _ in door.decisions() if d == "GRANTED"][0] == "feat_man"
    assert door.stop() == 0


def test_camera_gone_then_back(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    enroll(faces_dir, "feat_man", "photo.jpg")
    video = tmp_path / "cam" / "feed.mp4"
    door = start_door(broker.port, str(video))
    assert door.wait_for(lambda: "camera problem" in door.log(), 60), door.log()
    assert door.proc.poll() is None  # still running, retrying with back-off
    video.parent.mkdir()
    shutil.copy(faces_dir / "video/feat_man.mp4", video)
    assert door.wait_for(lambda: any(d == "GRANTED" for d, _, _ in door.decisions()), 60), door.log()
    assert door.proc.wait(60) == 0


def test_missing_collection_exits_with_config_code(tmp_path, broker, models_dir, faces_dir, start_door):
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"))
    assert door.proc.wait(60) == 78
    assert "collection 'door' does not exist" in door.log()


def test_bad_config_exits_with_config_code(tmp_path, broker, models_dir, faces_dir, start_door):
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       matching__frames_window=1, matching__frames_required=3)
    assert door.proc.wait(60) == 78
    assert "frames_window" in door.log()


def test_still_image_feed_is_denied_as_spoof(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    """An enrolled face replayed as a frozen feed (identical frames) never opens the door."""
    enroll(faces_dir, "obama", "1.jpg")
    feed = tmp_path / "feed"
    feed.mkdir()
    for i in range(6):
        shutil.copy(faces_dir / "people/obama/2.jpg", feed / f"frame-{i}.jpg")
    door = start_door(broker.port, str(feed))
    assert door.proc.wait(60) == 0, door.log()
    assert [d for d, _, _ in door.decisions()] == ["DENIED_SPOOF"], door.log()
    assert "GRANTED" not in door.log()


def test_presence_gate_with_tflite(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed")
    from facelink.models.provision import provision

    provision(models_dir, tflite=True)
    enroll(faces_dir, "feat_man", "photo.jpg")
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       models__presence_gate="blazeface")
    assert door.proc.wait(120) == 0, door.log()
    assert [d for d, _, _ in door.decisions()] == ["GRANTED"], door.log()


def test_sighup_reloads_thresholds_and_refuses_a_bad_file(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    enroll(faces_dir, "obama", "1.jpg")
    config = tmp_path / "door.toml"
    config.write_text("[matching]\nsimilarity_threshold = 99.0\n")
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       config=config, camera__loop="true")
    assert door.wait_for(lambda: "running" in door.log(), 60), door.log()
    config.write_text("[matching]\nsimilarity_threshold = 99.5\nframes_required = 2\n")
    door.proc.send_signal(signal.SIGHUP)
    assert door.wait_for(lambda: "configuration reloaded: threshold 99.50, 2 of 5 frames" in door.log(), 20), door.log()
    config.write_text("[matching]\nsimilarity_threshold = 250\n")
    door.proc.send_signal(signal.SIGHUP)
    assert door.wait_for(lambda: "reload refused" in door.log(), 20), door.log()
    config.write_text("[matching]\nsimilarity_threshold = 0.99\n")  # 99 on a 0-1 scale: strangers in
    door.proc.send_signal(signal.SIGHUP)
    assert door.wait_for(lambda: door.log().count("reload refused") == 2, 20), door.log()
    assert "similarity_threshold = 0.99 would open the door" in door.log()
    assert door.proc.poll() is None  # still running on the last good configuration
    assert door.stop() == 0


def test_home_assistant_discovery(tmp_path, broker, models_dir, faces_dir, enroll, start_door):
    enroll(faces_dir, "obama", "1.jpg")
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       mqtt__ha_discovery="true")
    assert door.proc.wait(120) == 0, door.log()
    watcher = Watcher(broker.port, ["homeassistant/#"], client_id="ha-watcher")  # retained: seen after the fact
    assert watcher.wait_for(lambda: len(watcher.payloads("/config")) == 3, 10)  # + the event entity
    sensor = next(p for p in watcher.payloads("/config") if p["unique_id"].endswith("_decision"))
    assert sensor["state_topic"] == "facelink/door-1/decision"
    assert sensor["availability_topic"] == "facelink/door-1/status"
    watcher.close()


def test_pure_python_broker_fallback(tmp_path, models_dir, faces_dir, enroll, start_door):
    """Where mosquitto is missing (a newcomer's laptop) the demo uses amqtt: the door works with it."""
    from broker import Broker

    enroll(faces_dir, "feat_man", "photo.jpg")
    with Broker(tmp_path / "amqtt", prefer="amqtt") as broker:
        assert broker.kind == "amqtt"
        watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="amqtt-watcher")
        door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"))
        assert door.proc.wait(120) == 0, door.log()
        assert watcher.wait_for(lambda: watcher.payloads("/decision"), 20)
        assert [d["decision"] for d in watcher.payloads("/decision")] == ["GRANTED"]
        watcher.close()


def test_deleted_faces_stop_opening_the_door(tmp_path, broker, models_dir, faces_dir, enroll, engine, start_door):
    from facelink.enroll import faces, users
    from facelink.enroll.context import Context
    from facelink.enroll.feed import ChangeFeed
    from facelink.enroll.store import Store

    face_id = enroll(faces_dir, "feat_man", "photo.jpg")
    watcher = Watcher(broker.port, ["facelink/+/health"], client_id="deleted-faces-watcher")
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"),
                       camera__loop="true", **FAST)
    assert door.wait_for(lambda: any(d == "GRANTED" for d, _, _ in door.decisions()), 60), door.log()
    with Store(tmp_path / "facelink.db") as store:
        ctx = Context(store, lambda: engine)
        users.disassociate_faces(ctx, "door", "feat_man", [face_id])
        faces.delete_faces(ctx, "door", [face_id])
        position = ChangeFeed(store, "door").snapshot().position
    # the door has applied the deletion once its health reports that feed position
    assert watcher.wait_for(lambda: any((h.get("collection_version") or 0) >= position
                                        for h in watcher.payloads("/health")), 30), door.log()
    watcher.close()
    marker = len(door.decisions())
    assert door.wait_for(lambda: len(door.decisions()) > marker + 10, 60)
    later = [d for d, _, _ in door.decisions()[marker:]]
    assert later and set(later) == {"DENIED_UNKNOWN"}, later
    # deleting the whole collection: nothing is grantable, the door reports ERROR and stays locked
    with Store(tmp_path / "facelink.db") as store:
        faces.delete_collection(Context(store, lambda: engine), "door")
    assert door.wait_for(lambda: "ERROR" in [d for d, _, _ in door.decisions()], 30), door.log()
    assert door.stop() == 0
    assert "GRANTED" not in [d for d, _, _ in door.decisions()[marker:]]
