"""The one MQTT topic layout. Every topic FaceLink publishes or subscribes to is spelled here.

    <prefix>/<device_id>/decision    QoS 1, not retained: decision events (facelink.decision/1)
    <prefix>/<device_id>/panel       QoS 1, not retained: an access panel's verdicts (facelink.panel/1)
                                     and the openings it commanded (facelink.panel-output/1)
    <prefix>/<device_id>/status      QoS 1, retained: ``online``; Last Will ``offline``
    <prefix>/<device_id>/health      QoS 0: the door's health every ``health_interval_s``
    <prefix>/<device_id>/alarm       QoS 1, not retained: sync alarms (facelink.alarm/1), via the outbox
    <prefix>/<device_id>/credential  subscribed, QoS 1: badge reads from an integration (card modes)
    <prefix>/<device_id>/sync/<C>/request  QoS 1: the door's own SyncRequest for collection C (see below)
    homeassistant/.../config         QoS 1, retained: Home Assistant discovery (optional)

Collection sync (desk ↔ doors, facelink.fleet.protocol), per collection ``C``:

    <prefix>/collections/<C>/changes          QoS 1: signed change sets
    <prefix>/collections/<C>/head             QoS 1, retained: signed head (newest seq)
    <prefix>/<device_id>/sync/<C>/request     QoS 1: a door's SyncRequest (untrusted), on the
                                              door's own topic: the broker ACL (``topic write
                                              <prefix>/<door>/#``, `facelink fleet acl`) lets only that door's user publish it,
                                              so the desk takes the device id from the topic
    <prefix>/collections/<C>/request          QoS 1: the shared request topic of doors not yet
                                              upgraded (any door may write it; the desk listens only
                                              while ``fleet.accept_shared_request_topic``)
    <prefix>/collections/<C>/reply/<device>   QoS 1: re-sent change sets / snapshot chunks, and the
                                              signed head answering that door's freshness challenge
"""

from __future__ import annotations

import json
from dataclasses import dataclass

HA_PREFIX = "homeassistant"
DEVICE_ID = r"^[A-Za-z0-9_.\-]{1,64}$"  # one topic level, and an MQTT user name an ACL line can hold
TOPIC_PREFIX = r"^[A-Za-z0-9_.\-/]{1,128}$"
# ``<prefix>/collections/`` holds the collections' sync topics: no door may be called that.
RESERVED_DEVICE_IDS = frozenset({"collections"})


@dataclass(frozen=True)
class DeviceTopics:
    """The topics of one door."""

    prefix: str
    device_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix.rstrip('/')}/{self.device_id}"

    @property
    def decision(self) -> str:
        return f"{self.base}/decision"

    @property
    def panel(self) -> str:
        return f"{self.base}/panel"

    @property
    def credential(self) -> str:
        return f"{self.base}/credential"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def alarm(self) -> str:
        return f"{self.base}/alarm"

    def sync_request(self, collection_id: str) -> str:
        """Where this door asks the desk for change sets or a snapshot of ``collection_id``."""
        return f"{self.base}/sync/{collection_id}/request"


def all_sync_requests(prefix: str, collection_id: str) -> str:
    """The desk's subscription: every door's own sync requests for ``collection_id``."""
    return f"{prefix.rstrip('/')}/+/sync/{collection_id}/request"


def sync_request_sender(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(device_id, collection_id)`` of a door's own request topic
    (``<prefix>/<device_id>/sync/<C>/request``), or None for any other topic."""
    base = prefix.rstrip("/") + "/"
    if not topic.startswith(base):
        return None
    parts = topic[len(base):].split("/")
    if len(parts) != 4 or parts[1] != "sync" or parts[3] != "request" or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[2]


def all_decisions(prefix: str) -> str:
    """The subscription the audit logger uses: every door's decision events."""
    return f"{prefix.rstrip('/')}/+/decision"


def all_alarms(prefix: str) -> str:
    """The audit logger's third subscription: every door's sync alarms."""
    return f"{prefix.rstrip('/')}/+/alarm"


def all_panel_verdicts(prefix: str) -> str:
    """The audit logger's second subscription: every access panel's answer to a door."""
    return f"{prefix.rstrip('/')}/+/panel"


@dataclass(frozen=True)
class CollectionTopics:
    """The sync topics of one collection (CollectionIds cannot contain ``/``, ``+`` or ``#``)."""

    prefix: str
    collection_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix.rstrip('/')}/collections/{self.collection_id}"

    @property
    def changes(self) -> str:
        return f"{self.base}/changes"

    @property
    def head(self) -> str:
        return f"{self.base}/head"

    @property
    def request(self) -> str:
        """The shared request topic (doors before per-door request topics; see the module doc)."""
        return f"{self.base}/request"

    def reply(self, device_id: str) -> str:
        return f"{self.base}/reply/{device_id}"


def all_heads(prefix: str) -> str:
    """Every collection's retained signed head (``facelink fleet status``)."""
    return f"{prefix.rstrip('/')}/collections/+/head"


def all_status(prefix: str) -> str:
    """Every door's retained status (``facelink fleet status``)."""
    return f"{prefix.rstrip('/')}/+/status"


def all_health(prefix: str) -> str:
    """Every door's health (``facelink fleet status``)."""
    return f"{prefix.rstrip('/')}/+/health"


def ha_discovery_messages(t: DeviceTopics) -> list[tuple[str, str, bool]]:
    """Home Assistant MQTT discovery for the last decision and the door's status."""
    device_id = t.device_id
    device = {"identifiers": [f"facelink_{device_id}"], "name": f"FaceLink {device_id}",
              "manufacturer": "FaceLink"}
    sensor = {"name": "Last decision", "unique_id": f"facelink_{device_id}_decision",
              "state_topic": t.decision, "value_template": "{{ value_json.decision }}",
              "json_attributes_topic": t.decision, "availability_topic": t.status,
              "payload_available": "online", "payload_not_available": "offline", "device": device}
    status = {"name": "Status", "unique_id": f"facelink_{device_id}_status", "state_topic": t.status,
              "payload_on": "online", "payload_off": "offline", "device_class": "connectivity",
              "device": device}
    from .ha_event import ha_event_message

    return [(f"{HA_PREFIX}/sensor/facelink_{device_id}/decision/config", json.dumps(sensor), True),
            (f"{HA_PREFIX}/binary_sensor/facelink_{device_id}/status/config", json.dumps(status), True),
            ha_event_message(device_id, t.decision, t.status, device)]
