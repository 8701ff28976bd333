"""card_and_face end to end: the real daemon, a real mosquitto, badge reads on the credential topic
and the sample door video. A face alone opens nothing; the wrong badge is DENIED_WRONG_FACE; the
holder's badge is GRANTED with both factors."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt

from facelink.enroll import credentials
from facelink.enroll.context import Context
from facelink.enroll.store import Store

from .conftest import Watcher


def test_card_and_face_over_mqtt(tmp_path, broker, faces_dir, enroll, engine, start_door):
    enroll(faces_dir, "feat_man", "photo.jpg")
    enroll(faces_dir, "obama", "1.jpg")
    with Store(tmp_path / "facelink.db") as store:
        ctx = Context(store, lambda: engine)
        credentials.put_user_credential(ctx, "door", "feat_man", "H10301:7:700")
        credentials.put_user_credential(ctx, "door", "obama", "H10301:7:701")
    watcher = Watcher(broker.port, ["facelink/+/decision", "facelink/+/health"], client_id="card-watcher")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="card-reader")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    door = start_door(broker.port, str(faces_dir / "video/feat_man.mp4"), camera__loop="true",
                      matching__mode="card_and_face", matching__card_window_s=30,
                      matching__cooldown_s=0, matching__frames_required=2, matching__frames_window=3)
    try:
        assert door.wait_for(lambda: "badge reads from MQTT" in door.log() and "running" in door.log(), 90), door.log()
        assert watcher.wait_for(lambda: any(h["frames"] >= 20 for h in watcher.payloads("/health")), 60)
        assert watcher.payloads("/decision") == []  # 20 frames of the enrolled face alone: nothing

        def badge_until(card: str, kind: str) -> dict:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pub.publish("facelink/door-1/credential", card, qos=1).wait_for_publish(5)
                if watcher.wait_for(lambda: any(d["decision"] == kind for d in watcher.payloads("/decision")), 8):
                    return next(d for d in watcher.payloads("/decision") if d["decision"] == kind)
            raise AssertionError(door.log())

        wrong = badge_until("H10301:7:701", "DENIED_WRONG_FACE")
        assert wrong["user_id"] == "obama" and wrong["factors"] == ["card", "face"]
        assert wrong["mode"] == "card_and_face"
        granted = badge_until("H10301:7:700", "GRANTED")
        assert granted["user_id"] == "feat_man" and granted["factors"] == ["card", "face"]
        assert granted["similarity"] >= 99.0
        unknown = badge_until("H10301:7:999", "DENIED_UNKNOWN_CARD")
        assert unknown["factors"] == ["card"] and unknown["user_id"] is None
    finally:
        pub.disconnect()
        pub.loop_stop()
        watcher.close()
    assert door.stop() == 0
    assert all(d["mode"] == "card_and_face" for d in watcher.payloads("/decision"))
