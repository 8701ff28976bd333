"""The Home Assistant event entity: only keys of HA's documented MQTT event schema, its required
keys present, and every decision kind the door can publish is one of its event_types."""

from __future__ import annotations

import json

from facelink.device import decision
from facelink.mqtt.ha_event import EVENT_TYPES
from facelink.mqtt.topics import DeviceTopics, ha_discovery_messages

# home-assistant.io/integrations/event.mqtt, configuration variables (2026)
HA_EVENT_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device",
    "device_class", "enabled_by_default", "encoding", "entity_category", "event_types", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id", "default_entity_id",
    "payload_available", "payload_not_available", "platform", "qos", "state_topic", "unique_id",
    "value_template"}
HA_DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
                  "model", "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}


def test_event_entity_follows_the_documented_schema():
    msgs = {t: json.loads(p) for t, p, retain in ha_discovery_messages(DeviceTopics("facelink", "front")) if retain}
    topic = "homeassistant/event/facelink_front/access/config"
    event = msgs[topic]
    assert set(event) <= HA_EVENT_KEYS and set(event["device"]) <= HA_DEVICE_KEYS
    assert {"state_topic", "event_types"} <= set(event)
    assert event["state_topic"] == "facelink/front/decision" and event["platform"] == "event"
    kinds = {v.lower() for k, v in vars(decision).items() if k.isupper() and k != "SCHEMA"}
    assert kinds == set(EVENT_TYPES)
    # the template HA renders from a decision payload yields one of the event types
    assert event["value_template"] == '{"event_type": "{{ value_json.decision | lower }}"}'
    assert len(msgs) == 3  # the last-decision sensor and the status stay
