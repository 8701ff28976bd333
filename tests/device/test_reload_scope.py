"""A SIGHUP applies [matching] and [liveness] only: what else the re-read file says is named in
the log and left as it runs, also inside the components the reload rebuilds (found in review:
the rebuilt decision policy took mqtt.device_id from the new file, so every later decision named
another door than the topic it went out on, and the audit logger quarantined all of them)."""

from __future__ import annotations

import json
import sqlite3

from facelink.device.daemon import Daemon


def test_a_reload_applies_its_matching_but_not_a_new_device_id(tmp_path, broker, make_settings, engine, ctx):
    from facelink.enroll import faces

    faces.create_collection(ctx, "door")
    config = tmp_path / "door.toml"
    config.write_text('[mqtt]\ndevice_id = "door-2"\n[matching]\nsimilarity_threshold = 99.5\n')
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    assert settings.mqtt.device_id == "door-1"
    daemon = Daemon(settings, config_path=config, engine=engine)
    try:
        daemon.reload()
        policy = daemon.pipeline.components.policy
        assert policy.threshold == 99.5  # [matching] applied
        assert policy.device_id == "door-1"  # mqtt.device_id needs a restart: the running one
        daemon.fail_closed(RuntimeError("probe"))  # an ERROR decision through the outbox
    finally:
        daemon.shutdown(flush_timeout_s=0)
    rows = sqlite3.connect(tmp_path / "outbox.db").execute("SELECT topic, payload FROM events").fetchall()
    rows = [(t, json.loads(p)) for t, p in rows if t.endswith("/decision")]
    assert rows, "the ERROR decision was not recorded"
    for topic, payload in rows:
        assert topic == "facelink/door-1/decision" and payload["device_id"] == "door-1", (topic, payload)


def test_a_reload_names_each_rule_it_changes(tmp_path, broker, make_settings, engine, ctx, caplog):
    """A SIGHUP that weakens the door (liveness off, a lower threshold) is on record by name in
    the reload's log line, not only as "threshold 98.00, 3 of 5 frames"."""
    from facelink.enroll import faces

    faces.create_collection(ctx, "door")
    config = tmp_path / "door.toml"
    config.write_text("[matching]\nsimilarity_threshold = 98.0\n[liveness]\nenabled = false\n")
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = Daemon(settings, config_path=config, engine=engine)
    try:
        with caplog.at_level("INFO", logger="facelink.device.daemon"):
            daemon.reload()
    finally:
        daemon.shutdown(flush_timeout_s=0)
    (line,) = [r for r in caplog.records if "configuration reloaded" in r.getMessage()]
    assert line.levelname == "WARNING"
    assert "liveness.enabled True -> False" in line.getMessage()
    assert "matching.similarity_threshold 99.0 -> 98.0" in line.getMessage()
