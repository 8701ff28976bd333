"""The audit logger deduplicates redelivered decisions and answers queries."""

from __future__ import annotations

from facelink.audit.logger import AuditLog


def test_dedup_and_query(tmp_path):
    log = AuditLog(tmp_path / "a.db", tmp_path / "a.jsonl")
    base = {"decision": "GRANTED", "device_id": "front", "user_id": "ann", "similarity": 99.7}
    assert log.record({**base, "event_id": "1", "timestamp": "2026-01-01T08:00:00+00:00"})
    assert not log.record({**base, "event_id": "1", "timestamp": "2026-01-01T08:00:00+00:00"})
    log.record({**base, "event_id": "2", "timestamp": "2026-01-02T08:00:00+00:00", "device_id": "back"})
    log.record({"event_id": "3", "timestamp": "2026-01-03T08:00:00+00:00", "decision": "DENIED_UNKNOWN",
                "device_id": "front", "user_id": None})
    assert [r["event_id"] for r in log.query(user="ann")] == ["1", "2"]
    assert [r["event_id"] for r in log.query(device="front")] == ["1", "3"]
    assert [r["event_id"] for r in log.query(since="2026-01-02")] == ["2", "3"]
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 3
    log.close()


def test_logger_survives_garbage_on_the_topic(tmp_path, broker):
    """A malformed message is logged and ignored; the next real decision is still recorded."""
    import json
    import threading
    import time

    import paho.mqtt.client as mqtt

    from facelink.audit.logger import subscribe

    audit = AuditLog(tmp_path / "a.db")
    stop = threading.Event()
    worker = threading.Thread(target=subscribe, args=(audit, "127.0.0.1", broker.port, "facelink",
                                                      "test-logger", stop), daemon=True)
    worker.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    time.sleep(1.0)
    for payload in (b"\xff\xfe not json", b'{"decision": "GRANTED"}',
                    json.dumps({"event_id": "ok-1", "decision": "DENIED_UNKNOWN", "device_id": "d"}).encode()):
        pub.publish("facelink/d/decision", payload, qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 10
    while not audit.query() and time.monotonic() < deadline:
        time.sleep(0.1)
    pub.loop_stop()
    stop.set()
    worker.join(10)
    assert [r["event_id"] for r in audit.query()] == ["ok-1"]
    audit.close()
