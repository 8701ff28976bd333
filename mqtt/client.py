"""MQTT transport (paho-mqtt 2) and the outbox pump that delivers decisions in order.

Topics: <prefix>/<device>/decision (QoS 1, not retained), <prefix>/<device>/status (retained
``online``; Last Will ``offline``), <prefix>/<device>/health (QoS 0, periodic).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from typing import Any, Protocol

from facelink.mqtt.outbox import Outbox

log = logging.getLogger(__name__)


class Transport(Protocol):
    def publish(self, topic: str, payload: str, *, qos: int = 1, retain: bool = False,
                timeout: float = 5.0) -> bool: ...

    def is_connected(self) -> bool: ...

    def stop(self) -> None: ...


def topics(prefix: str, device_id: str) -> dict[str, str]:
    base = f"{prefix.rstrip('/')}/{device_id}"
    return {"decision": f"{base}/decision", "status": f"{base}/status", "health": f"{base}/health"}


class MqttTransport:
    """A paho client with a retained online/offline status and automatic reconnects."""

    def __init__(self, settings: Any, on_connect_extra: list[tuple[str, str, bool]] | None = None) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.settings = settings
        self.topics = topics(settings.topic_prefix, settings.device_id)
        self._extra = on_connect_extra or []
        self._connected = threading.Event()
        self._stopping = False
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"facelink-{settings.device_id}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.will_set(self.topics["status"], "offline", qos=1, retain=True)
        if settings.username:
            client.username_pw_set(settings.username,
                                   settings.password.get_secret_value() if settings.password else None)
        if settings.tls_ca:
            client.tls_set(ca_certs=str(settings.tls_ca),
                           certfile=str(settings.tls_cert) if settings.tls_cert else None,
                           keyfile=str(settings.tls_key) if settings.tls_key else None,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker refused the connection: %s", reason_code)
            return
        log.info("MQTT connected to %s:%d", self.settings.host, self.settings.port)
        client.publish(self.topics["status"], "online", qos=1, retain=True)
        for topic, payload, retain in self._extra:
            client.publish(topic, payload, qos=1, retain=retain)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._stopping:
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)
        self._connected.clear()

    def is_connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: str, *, qos: int = 1, retain: bool = False,
                timeout: float = 5.0) -> bool:
        """True only when the broker acknowledged (QoS 1) or the message was sent (QoS 0)."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def stop(self) -> None:
        """Publish ``offline`` (retained) and disconnect cleanly."""
        self._stopping = True
        if self._connected.is_set():
            info = self._client.publish(self.topics["status"], "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(3)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()


class OutboxPump:
    """Publishes outbox events oldest first; an event leaves the outbox only after its PUBACK."""

    def __init__(self, outbox: Outbox, transport: Transport, *, retry_s: float = 1.0) -> None:
        self.outbox = outbox
        self.transport = transport
        self.retry_s = retry_s
        self.delivered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> OutboxPump:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.deliver_some():
                self.outbox.added.wait(self.retry_s)
                self.outbox.added.clear()

    def deliver_some(self, batch: int = 50) -> bool:
        """Deliver up to ``batch`` events in order; False when idle or the broker is away."""
        events = self.outbox.peek(batch)
        if not events:
            return False
        for ev in events:
            if self._stop.is_set() or not self.transport.publish(ev.topic, ev.payload, qos=1):
                return False
            self.outbox.ack(ev.seq)
            self.delivered += 1
        return True

    def flush(self, timeout: float) -> bool:
        """Try to empty the outbox within ``timeout`` seconds (on shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.outbox) and time.monotonic() < deadline:
            if not self.deliver_some():
                time.sleep(0.1)
        return len(self.outbox) == 0

    def stop(self) -> None:
        self._stop.set()
        self.outbox.added.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def ha_discovery_messages(prefix: str, device_id: str) -> list[tuple[str, str, bool]]:
    """Home Assistant MQTT discovery for the last decision and the door's status."""
    t = topics(prefix, device_id)
    device = {"identifiers": [f"facelink_{device_id}"], "name": f"FaceLink {device_id}",
              "manufacturer": "FaceLink"}
    sensor = {"name": "Last decision", "unique_id": f"facelink_{device_id}_decision",
              "state_topic": t["decision"], "value_template": "{{ value_json.decision }}",
              "json_attributes_topic": t["decision"], "availability_topic": t["status"],
              "payload_available": "online", "payload_not_available": "offline", "device": device}
    status = {"name": "Status", "unique_id": f"facelink_{device_id}_status", "state_topic": t["status"],
              "payload_on": "online", "payload_off": "offline", "device_class": "connectivity",
              "device": device}
    from .ha_event import ha_event_message

    return [(f"homeassistant/sensor/facelink_{device_id}/decision/config", json.dumps(sensor), True),
            (f"homeassistant/binary_sensor/facelink_{device_id}/status/config", json.dumps(status), True),
            ha_event_message(device_id, t["decision"], t["status"], device)]
