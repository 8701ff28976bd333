"""Settings for access-control hardware: the OSDP reader link, the Wiegand output, badge readers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from facelink.enroll.validate import COLLECTION_ID, whole
from facelink.mqtt.topics import DEVICE_ID, RESERVED_DEVICE_IDS

from .section import Section


class OsdpSettings(Section):
    device: str = Field("/dev/ttyUSB0", description="Serial device of the RS-485 adapter the panel's reader bus is on (door.output = \"osdp\").")
    address: int = Field(1, ge=0, le=126, description="This reader's OSDP address on the bus (as configured in the panel).")
    baud: Literal[9600, 19200, 38400, 57600, 115200] = Field(9600, description="Bus speed (as configured in the panel).")
    scbk_file: Path = Field(Path("/etc/facelink/osdp_scbk"), description="Secure Channel Base Key: 32 hex digits, mode 0600. Missing: see install_mode.")
    install_mode: bool = Field(False, description="First provisioning only: with no key file, let the panel set the secure channel up with the default install key and send the site key, which is written to scbk_file (the install key itself or all zeros is refused). Until then no card read is sent and no panel command obeyed; then the reader restarts its OSDP stack with the key (a panel may show it offline for a few minutes). Turn off afterwards.")
    debounce_s: float = Field(3.0, ge=0, le=60, description="The same credential is not sent to the panel again within this time (a GRANTED it holds back is ACTUATION_FAILED). At most matching.cooldown_s, except in card_and_face.")
    verdict_timeout_s: float = Field(2.0, gt=0, le=30, description="How long to wait for the panel's LED/output answer to a card read before recording NO_RESPONSE.")


class WiegandSettings(Section):
    d0_pin: int = Field(23, ge=0, le=40, description="BCM pin driving Wiegand D0 (door.output = \"wiegand\").")
    d1_pin: int = Field(24, ge=0, le=40, description="BCM pin driving Wiegand D1.")
    pulse_width_us: int = Field(50, ge=20, le=100, description="Low pulse width per bit (H10301 convention: 20-100 us).")
    pulse_interval_us: int = Field(2000, ge=200, le=10000, description="Time from one bit's pulse to the next (200 us - 10 ms: half Wiegand's 20 ms limit, the margin a busy CPU needs).")


class CredentialSettings(Section):
    sources: list[Literal["mqtt", "evdev", "serial"]] = Field(
        ["mqtt"], description="Where badge reads come from in the card modes: mqtt (<prefix>/<device>/credential), evdev (a USB keyboard-wedge reader), serial (a reader sending one credential per line).")
    evdev_device: str = Field("", description="Input device of a keyboard-wedge reader, e.g. /dev/input/by-id/usb-...-event-kbd (needs `pip install evdev`).")
    evdev_format: Literal["H10301", "H10306", "H10304"] = Field("H10301", description="Format of the card numbers a keyboard-wedge reader types: FACILITY:CARD or the 26/34/37-bit decimal number is read as this format.")
    serial_device: str = Field("", description="Serial reader: one credential per line (FORMAT:FACILITY:CARD, or Wiegand bits as 0/1).")
    serial_baud: Literal[9600, 19200, 38400, 57600, 115200] = Field(9600, description="Serial reader speed.")


class FleetSettings(Section):
    signing_key: Path | None = Field(None, description="Desk only: Ed25519 private key (PEM, 0600) that signs exports (`facelink fleet keygen`).")
    trusted_keys: list[Path] = Field([], description="Door: desk public keys (PEM) an imported export must be signed by; empty: unsigned files are accepted (single-appliance use).")
    publish: list[Annotated[str, Field(pattern=whole(COLLECTION_ID))]] = Field([], description="Desk: collections `facelink fleet publish` sends to the doors (signed change sets on <prefix>/collections/<C>/changes).")
    heartbeat_s: float = Field(30.0, gt=0, le=3600, description="Desk: the signed head of each published collection is re-published (retained) this often, so a door can confirm it is up to date.")
    poll_interval_s: float = Field(0.2, gt=0, le=60, description="Desk: how often the publisher reads the change feed (a revocation leaves the desk within this).")
    request_burst: int = Field(5, ge=1, le=1000, description="Desk: sync requests one door may send at once before it is rate-limited.")
    request_interval_s: float = Field(1.0, gt=0, le=3600, description="Desk: a rate-limited door gets one more request answered per this many seconds (refusals are logged and counted).")
    client_id: str = Field("facelink-desk", pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="Desk: MQTT client id of the publisher.")
    snapshot_replies_per_minute: int = Field(600, ge=1, le=100_000, description="Desk: snapshots sent per minute to all doors together (a ceiling on what requests can make the desk send). Doors over it wait their turn: keep it high enough that every door gets its snapshot within sync.max_staleness_s after a rebase, or the doors still waiting deny (on_stale = deny).")
    snapshot_mb_per_minute: float = Field(6000.0, gt=0, le=1_000_000, description="Desk: megabytes of snapshot replies and re-sent change sets (range replies) per minute to all doors together (~0.9 KB per face and door); a snapshot under way is finished, the next waits until the budget is positive again; ranges spend only the half above the snapshots' reserve (a range asked for while that half is spent is not sent; the door asks again). Must let doors x snapshot size through within sync.max_staleness_s (see replies).")
    doors: dict[Annotated[str, Field(pattern=DEVICE_ID)], list[Annotated[str, Field(pattern=whole(COLLECTION_ID))]]] = Field({}, description="Desk: each door this desk serves (its device id = MQTT user name) and the collections it is sent, e.g. door-lobby = [\"staff\"]. `facelink fleet publish` needs it (exit 78 when empty or naming a collection not in fleet.publish) and answers a door's sync requests only for its collections (UNLISTED_DEVICE); `facelink fleet acl` writes the broker ACL from it.")
    reply_to_seen_doors_only: bool = Field(True, description="Desk: answer sync requests only for device ids seen on <prefix>/<device_id>/status or /health (the broker ACL ties those topics to the door's username), not for ids a request merely names.")
    accept_shared_request_topic: bool = Field(True, description="Desk: also answer sync requests on the shared <prefix>/collections/<C>/request (doors not yet upgraded; there the device id is only what the request says). Doors ask on their own <prefix>/<device_id>/sync/<C>/request, which the desk always answers; set false once every door is upgraded (the shared topic is then not subscribed).")

    @field_validator("doors")
    @classmethod
    def _doors_are_device_ids(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        if RESERVED_DEVICE_IDS & v.keys():
            raise ValueError("'collections' is reserved (the collections' sync topics), not a door")
        for door, collections in v.items():
            if not collections or len(set(collections)) != len(collections):
                raise ValueError(f"{door!r} needs its collections, each once")
        return v
