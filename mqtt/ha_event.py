"""Home Assistant MQTT discovery for an ``event`` entity per door: every decision fires an event
whose type is the decision in lower case (``granted``, ``denied_unknown``, ...), so HA
automations can trigger on one kind of decision. Keys follow HA's documented MQTT event schema
(``state_topic`` and ``event_types`` required; ``value_template`` renders the JSON
``{"event_type": ...}`` HA expects; the whole decision is the event's attributes)."""

from __future__ import annotations

import json

EVENT_TYPES = ("granted", "denied_unknown", "denied_low_quality", "denied_spoof", "denied_wrong_face",
               "denied_unknown_card", "denied_no_face", "error", "actuation_failed")


def ha_event_message(device_id: str, decision_topic: str, status_topic: str,
                     device: dict) -> tuple[str, str, bool]:
    config = {"name": "Access", "unique_id": f"facelink_{device_id}_access", "platform": "event",
              "state_topic": decision_topic, "event_types": list(EVENT_TYPES),
              "value_template": '{"event_type": "{{ value_json.decision | lower }}"}',
              "json_attributes_topic": decision_topic, "availability_topic": status_topic,
              "payload_available": "online", "payload_not_available": "offline", "qos": 1,
              "icon": "mdi:door", "device": device}
    return (f"homeassistant/event/facelink_{device_id}/access/config", json.dumps(config), True)
