"""The one MQTT client (paho-mqtt 2, ``CallbackAPIVersion.VERSION2``): TLS, client certificates,
username/password, automatic reconnects, a Last Will. The door, the audit logger and anything
that comes later use it; nothing else in FaceLink imports paho.

``publish`` returns True only once the broker acknowledged a QoS 1 message (PUBACK), which is what
lets the outbox delete an event. A message handler given to the client can never raise into
paho's network thread: whatever it raises is logged and the message is acknowledged -- unless the
client was made with ``ack_when_handled`` (the audit logger): then a QoS 1 message is acknowledged
only once its handler returned, one whose handler raised stays unacknowledged at the broker (which
sends it again when the persistent session reconnects: :meth:`MqttClient.redeliver`).
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from facelink.errors import ConfigError

from .topics import DeviceTopics, ha_discovery_messages

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
UNACK_LOG_EVERY_S = 10.0  # a handler failing on every message: one ERROR line per period


class Pending(Protocol):
    """A QoS 1 message handed to the client and not yet known to be acknowledged."""

    def wait(self, timeout: float) -> bool:
        """True once the broker acknowledged it (PUBACK); False after ``timeout`` or a failure."""
        ...

    def done(self) -> bool:
        """True if the broker acknowledged it already (never waits)."""
        ...


class Transport(Protocol):
    """What the door needs from a broker connection (the pipeline never sees paho)."""

    def publish(self, topic: str, payload: str, *, qos: int = 1, retain: bool = False,
                timeout: float = 5.0) -> bool: ...

    def send(self, topic: str, payload: str) -> Pending | None:
        """Hand a QoS 1 message over without waiting (None: not connected or refused): several
        can be in flight at once, in order on the one connection."""
        ...

    def is_connected(self) -> bool: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Will:
    """Last Will: published by the broker if this client vanishes; also sent on a clean stop."""

    topic: str
    payload: str = "offline"
    online: str = "online"


class MqttClient:
    """A connected-in-the-background paho client. ``settings`` is config.MqttSettings."""

    def __init__(self, settings: Any, *, client_id: str, clean_session: bool = True,
                 will: Will | None = None, on_connect_publish: Sequence[tuple[str, str, bool]] = (),
                 subscriptions: Sequence[str | tuple[str, int]] = (),
                 on_message: MessageHandler | None = None, ack_when_handled: bool = False) -> None:
        """``subscriptions``: topic filters, subscribed at QoS 1, or ``(filter, qos)``.
        ``ack_when_handled``: PUBACK a QoS 1 message only when ``on_message`` returned normally;
        one it raised on is not acknowledged (the broker keeps it: with ``clean_session=False`` it
        is sent again after a reconnect, see :meth:`redeliver`; beyond the broker's in-flight
        limit it sends nothing more until then). Default: every message is acknowledged."""
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.settings = settings
        self.client_id = client_id
        self._will = will
        self._on_connect_publish = list(on_connect_publish)
        self._subscriptions = [(s, 1) if isinstance(s, str) else (s[0], int(s[1])) for s in subscriptions]
        self._handler = on_message
        self._ack_when_handled = ack_when_handled
        self.unacknowledged = 0  # messages left unacknowledged (ack_when_handled) since the start
        self._unack_logged_at = -1e9
        self._unack_unlogged = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()  # every SUBACK of this connection's subscriptions is in
        self._suback_due: dict[int, str] = {}  # mid -> topic filter
        self.refused: set[str] = set()  # topic filters the broker refused (SUBACK 0x80) on this connection
        self._stopping = False
        self._redelivering = False
        self._failed_why: str | None = None  # the last connection failure said in the log
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, clean_session=clean_session,
                             manual_ack=ack_when_handled)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=1, retain=True)
        if settings.password and not settings.tls_ca:
            from facelink.config.settings import is_loopback

            if not is_loopback(settings.host):  # only with mqtt.insecure_plaintext: loud, every time
                log.warning("MQTT password sent WITHOUT TLS to %s:%d (mqtt.insecure_plaintext = true): "
                            "anyone on the network can read it and every message", settings.host, settings.port)
        if settings.username:
            client.username_pw_set(settings.username,
                                   settings.password.get_secret_value() if settings.password else None)
        if settings.tls_ca:
            _configure_tls(client, settings)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # the outbox pump's window, plus room for the client's own QoS 1 messages (status, discovery)
        window = int(getattr(settings, "publish_window", 20)) + 16
        client.max_inflight_messages_set(window)
        client.max_queued_messages_set(max(1000, 2 * window))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._connect()

    def _connect(self) -> None:
        """Connect in the background (paho retries on its own) and run the network thread."""
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self._client.loop_start()

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker refused the connection: %s", reason_code)
            return
        self._failed_why = None
        log.info("MQTT connected to %s:%d as %s", self.settings.host, self.settings.port, self.client_id)
        if self._will is not None:
            client.publish(self._will.topic, self._will.online, qos=1, retain=True)
        for topic, payload, retain in self._on_connect_publish:
            client.publish(topic, payload, qos=1, retain=retain)
        self._subscribed.clear()
        self.refused = set()
        self._suback_due = {client.subscribe(topic, qos=qos)[1]: topic for topic, qos in self._subscriptions}
        if not self._suback_due:
            self._subscribed.set()
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        topic = self._suback_due.pop(mid, None)
        if topic is not None and any(getattr(rc, "is_failure", False) for rc in reason_codes):
            # mosquitto answers a subscription its ACL denies with 0x80 (and sends nothing on it):
            # said, never silently taken as subscribed
            self.refused.add(topic)
            log.error("MQTT broker refused the subscription to %s (%s): nothing on it reaches %s "
                      "(the broker's ACL?)", topic, ", ".join(str(rc) for rc in reason_codes), self.client_id)
        if not self._suback_due:
            self._subscribed.set()

    def _on_connect_fail(self, client, userdata) -> None:
        """A connection attempt raised (paho calls this inside its ``except OSError``, and retries):
        said once per reason, at ERROR for a TLS failure (a certificate that does not verify or
        does not name the host: an impostor broker is refused, and never silently)."""
        exc = sys.exc_info()[1]
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
        if why == self._failed_why:
            return
        self._failed_why = why
        level = logging.ERROR if isinstance(exc, ssl.SSLError) else logging.WARNING
        log.log(level, "MQTT cannot connect to %s:%d%s: %s (retrying)", self.settings.host, self.settings.port,
                " over TLS" if self.settings.tls_ca else "", why)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._stopping and not self._redelivering:
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)
        self._connected.clear()
        self._subscribed.clear()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            if self._handler is not None:
                self._handler(msg.topic, bytes(msg.payload))
        except Exception as exc:  # noqa: BLE001 - nothing may escape into paho's thread
            if not self._ack_when_handled:  # paho acknowledges it on return
                log.exception("message handler failed on %s (%d bytes); message acknowledged",
                              msg.topic, len(msg.payload))
                return
            self.unacknowledged += 1
            self._said_unacknowledged(msg.topic, exc)
            return  # no PUBACK: the broker keeps it (found in review 95: acknowledged, then lost)
        if self._ack_when_handled and msg.qos > 0:
            client.ack(msg.mid, msg.qos)

    def _said_unacknowledged(self, topic: str, exc: Exception) -> None:
        """One ERROR line per ``UNACK_LOG_EVERY_S`` (a handler failing on every message is not a
        flood of log lines), with how many more since."""
        now = time.monotonic()
        if now - self._unack_logged_at < UNACK_LOG_EVERY_S:
            self._unack_unlogged += 1
            return
        more = f" (and {self._unack_unlogged} more since the last report)" if self._unack_unlogged else ""
        log.error("message on %s not handled (%s: %s): NOT acknowledged, the broker keeps it%s",
                  topic, type(exc).__name__, exc, more)
        self._unack_logged_at, self._unack_unlogged = now, 0

    # -- the Transport interface ----------------------------------------------------------
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """Connected, and the broker acknowledged every subscription of this connection (in the
        order they were made; one it refused is in :attr:`refused`). mosquitto queues a
        subscription's retained messages as it handles the SUBSCRIBE, before it answers a later
        one, and this client hands them to ``on_message`` in arrival order: so once this is True,
        the retained messages of every subscription but the last were handled -- for those
        subscribed at QoS 0 only: QoS 1 messages beyond mosquitto's ``max_inflight_messages``
        (20 by default; 1 on some sites) wait for PUBACKs while the SUBACKs go ahead of them
        (found in review 87). Brokers that send retained messages after the SUBACK (EMQX, ...)
        give no such order. The desk subscribes its heads first, at QoS 0 (fleet/publisher.py)."""
        return self._connected.is_set() and self._subscribed.wait(timeout) and self._connected.is_set()

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

    def send(self, topic: str, payload: str) -> Pending | None:
        if not self._connected.is_set():
            return None
        info = self._client.publish(topic, payload, qos=1)
        return _PahoPending(info) if info.rc == self._mqtt.MQTT_ERR_SUCCESS else None

    def redeliver(self) -> None:
        """Disconnect and connect the same session again, so that the broker sends again every
        message this client has not acknowledged (MQTT sends a persistent session's unacknowledged
        QoS 1 messages again on a reconnect, never on the same connection). For a client made with
        ``ack_when_handled`` and ``clean_session=False``, once its handler works again. Never from
        the handler (paho's network thread): it waits for that thread to end."""
        if self._stopping:
            return
        self._redelivering = True
        try:
            self._client.disconnect()
            self._client.loop_stop()
        finally:
            self._redelivering = False
        if self._stopping:
            return
        self._connect()

    def stop(self) -> None:
        """Publish the Will's payload (retained) if there is one, and disconnect cleanly."""
        self._stopping = True
        if self._will is not None and self._connected.is_set():
            info = self._client.publish(self._will.topic, self._will.payload, qos=1, retain=True)
            try:
                info.wait_for_publish(3)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()


class _PahoPending:
    def __init__(self, info: Any) -> None:
        self._info = info

    def wait(self, timeout: float) -> bool:
        try:
            self._info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return self.done()

    def done(self) -> bool:
        try:
            return bool(self._info.is_published())
        except (RuntimeError, ValueError):
            return False


def _configure_tls(client: Any, settings: Any) -> None:
    """TLS with the configured CA and (optionally) a client certificate; a bad file is a ConfigError."""
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, key)
        if path is not None and not path.is_file():
            raise ConfigError(f"mqtt.{key}: file not found: {path}")
    try:
        client.tls_set(ca_certs=str(settings.tls_ca),
                       certfile=str(settings.tls_cert) if settings.tls_cert else None,
                       keyfile=str(settings.tls_key) if settings.tls_key else None,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
    except (ssl.SSLError, OSError, ValueError) as exc:
        key = "mqtt.tls_cert" if settings.tls_cert else "mqtt.tls_ca"
        raise ConfigError(f"{key}: cannot use the TLS files: {exc}") from None


def door_client(settings: Any, *, subscriptions: Sequence[str] = (),
                on_message: MessageHandler | None = None, persistent: bool = False) -> MqttClient:
    """The door's connection: retained ``online``/Last Will ``offline`` on its status topic,
    Home Assistant discovery when configured. ``persistent`` (collection sync): a persistent
    session under the door's stable client id, so QoS 1 messages for ``subscriptions`` published
    while the door is offline wait at the broker."""
    t = DeviceTopics(settings.topic_prefix, settings.device_id)
    extra = ha_discovery_messages(t) if settings.ha_discovery else []
    return MqttClient(settings, client_id=f"facelink-{settings.device_id}", will=Will(t.status),
                      on_connect_publish=extra, clean_session=not persistent,
                      subscriptions=subscriptions, on_message=on_message)
