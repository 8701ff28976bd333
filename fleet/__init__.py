"""Desk -> door trust: Ed25519 signatures on everything the desk sends a door (export files now;
MQTT change sets, ``facelink.fleet.changeset``, are verified with the same keys)."""
