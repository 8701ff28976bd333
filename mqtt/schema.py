"""The decision message, schema ``facelink.decision/1``: the one definition of what a door
publishes on ``<prefix>/<device>/decision`` and what the audit logger accepts.

The door builds every payload through ``DecisionMessage`` (device/decision.py) and the logger
validates every message it receives against it, so the two cannot drift. Strict: wrong types,
unknown fields and missing fields are refused (the logger quarantines them).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from facelink.enroll.validate import COLLECTION_ID, EXTERNAL_IMAGE_ID, USER_ID, whole
from facelink.mqtt.topics import DEVICE_ID

SCHEMA = "facelink.decision/1"
GRANTED = "GRANTED"
DENIED_UNKNOWN = "DENIED_UNKNOWN"
DENIED_LOW_QUALITY = "DENIED_LOW_QUALITY"
DENIED_SPOOF = "DENIED_SPOOF"
DENIED_WRONG_FACE = "DENIED_WRONG_FACE"  # card_and_face: the face is not the badge holder's
DENIED_UNKNOWN_CARD = "DENIED_UNKNOWN_CARD"  # card modes: a badge nobody holds
DENIED_NO_FACE = "DENIED_NO_FACE"  # card_and_face: no matching face within card_window_s
ERROR = "ERROR"
ACTUATION_FAILED = "ACTUATION_FAILED"  # follow-up: the relay failed after the GRANTED in refers_to
KINDS = (GRANTED, DENIED_UNKNOWN, DENIED_LOW_QUALITY, DENIED_SPOOF, DENIED_WRONG_FACE, DENIED_UNKNOWN_CARD,
         DENIED_NO_FACE, ERROR, ACTUATION_FAILED)


# One spelling of a timestamp on every Python FaceLink runs on. datetime.fromisoformat accepts far
# more on 3.11+ than on 3.10 ('Z', fractions of other than 3 or 6 digits, the basic format), so a
# logger or an import on a Jetson (3.10) refused what one on 3.11 took. Accepted everywhere:
# YYYY-MM-DD, 'T' or a space, HH:MM:SS with an optional fraction of 1-6 digits, then Z or +-HH:MM.
_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})",
                        re.ASCII)


def parse_timestamp(v: str) -> datetime:
    """A FaceLink timestamp (an event's ``timestamp``, an export's ``ExportedAt``) as an aware
    datetime, the same on Python 3.10 and 3.11+; ValueError for anything else."""
    m = _TIMESTAMP.fullmatch(v)
    if m is None:
        raise ValueError("not an ISO-8601 timestamp with a time zone (YYYY-MM-DDTHH:MM:SS[.ffffff] then Z or +HH:MM)")
    day, clock, fraction, zone = m.groups()
    text = f"{day}T{clock}" + (f".{fraction.ljust(6, '0')}" if fraction else "") + ("+00:00" if zone == "Z" else zone)
    try:
        return datetime.fromisoformat(text)  # the form 3.10 reads
    except ValueError:
        raise ValueError(f"not a valid date and time: {v[:40]!r}") from None


def aware_iso(v: str) -> str:
    """An ISO-8601 timestamp with a time zone (every FaceLink event's ``timestamp``)."""
    parse_timestamp(v)
    return v


# The fields every event shares, defined once (each model lists them itself, after ``schema``,
# so that published payloads keep ``schema`` first).
EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID)]
Timestamp = Annotated[str, Field(max_length=64, description="ISO-8601 with a time zone"), AfterValidator(aware_iso)]
ClockSynchronized = Annotated[bool | None, Field(description=(
    "false: the kernel of the machine that stamped ``timestamp`` said its wall clock was not "
    "synchronized (no NTP since boot, e.g. a Pi on fake-hwclock after a power cut, or none for "
    "~9 hours; mqtt/wall_clock.py): the time may be off. Published only when false, so a logger "
    "that predates it still accepts every other event"))]
EVENT_STREAM = r"^[0-9a-f]{32}$"
EventStream = Annotated[str | None, Field(pattern=EVENT_STREAM, description=(
    "the door outbox's id (drawn once, when its file was created): with event_seq, this event's "
    "place among everything the door recorded (mqtt/outbox.py)"))]
EVENT_SEQ_MAX = 2**63 - 1  # SQLite's INTEGER: a larger number cannot be stored (found in review:
#                           such a message was neither recorded nor quarantined, only logged)
EventSeq = Annotated[int | None, Field(ge=1, le=EVENT_SEQ_MAX, description=(
    "1, 2, 3, … in the order the door recorded its events in that outbox, never reused: the audit "
    "logger lists the numbers it never received (facelink-logger gaps)"))]


class EventMessage(BaseModel):
    """What every published event model shares: strict, frozen, unknown fields refused, and
    ``payload()`` — the JSON object as published, ``schema`` first; ``event_stream`` and
    ``event_seq`` (the outbox adds them: each model lists them before ``clock_synchronized``) only
    when set, ``clock_synchronized`` (each model lists it last) only when false."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="after")
    def _numbered_whole(self) -> EventMessage:
        if (getattr(self, "event_stream", None) is None) != (getattr(self, "event_seq", None) is None):
            raise ValueError("event_stream and event_seq go together")
        return self

    def payload(self) -> dict:
        out = self.model_dump(mode="json", by_alias=True)
        for numbered in ("event_stream", "event_seq"):
            if out.get(numbered, 0) is None:
                del out[numbered]
        if out.get("clock_synchronized", False) is not False:
            del out["clock_synchronized"]
        return out


class DecisionMessage(EventMessage):
    schema_: Literal["facelink.decision/1"] = Field(SCHEMA, alias="schema")
    event_id: EventId
    timestamp: Timestamp
    device_id: DeviceId
    collection_id: str = Field(pattern=whole(COLLECTION_ID))
    decision: Literal["GRANTED", "DENIED_UNKNOWN", "DENIED_LOW_QUALITY", "DENIED_SPOOF",
                      "DENIED_WRONG_FACE", "DENIED_UNKNOWN_CARD", "DENIED_NO_FACE", "ERROR",
                      "ACTUATION_FAILED"]
    user_id: str | None = Field(None, pattern=whole(USER_ID))
    face_id: str | None = Field(None, max_length=64)
    external_image_id: str | None = Field(None, pattern=whole(EXTERNAL_IMAGE_ID))
    similarity: float | None = Field(None, ge=0, le=100)
    threshold: float = Field(ge=0, le=100)
    model_version: str = Field(max_length=128)
    track_id: int | None = Field(None, ge=0)
    frames_matched: int = Field(0, ge=0)
    frames_window: int = Field(0, ge=0)
    reason: str | None = Field(None, max_length=1000)
    liveness: dict[str, Any] | None = Field(None, description="presentation-attack checks run and what they measured")
    mode: Literal["face", "card_and_face", "card_or_face"] = Field("face", description="matching.mode")
    factors: list[Literal["card", "face"]] = Field(default_factory=lambda: ["face"], max_length=2,
                                                   description="what was seen")
    refers_to: EventId | None = Field(None, description="ACTUATION_FAILED: the event id of the GRANTED it follows")
    event_stream: EventStream = None
    event_seq: EventSeq = None
    clock_synchronized: ClockSynchronized = None

    @model_validator(mode="after")
    def _consistent(self) -> DecisionMessage:
        if self.decision == GRANTED and self.user_id is None:
            raise ValueError("GRANTED needs user_id")
        if self.decision == ACTUATION_FAILED and self.refers_to is None:
            raise ValueError("ACTUATION_FAILED needs refers_to")
        return self


PANEL_SCHEMA = "facelink.panel/1"
SEND_FAILED = "send_failed"  # a panel record's NO_RESPONSE reason: the credential broke on the way
NOT_SENT = "not_sent"  # ... the panel was never sent the credential (refused before sending)
WITH_DETAIL = (SEND_FAILED, NOT_SENT)  # the reasons that carry ``detail`` (and need it)


class PanelVerdictMessage(EventMessage):
    """An access panel's answer to the card read FaceLink sent for a GRANTED decision
    (``<prefix>/<device>/panel``): what the panel did, recorded beside FaceLink's decision.
    The door builds it here and the audit logger validates it here."""

    schema_: Literal["facelink.panel/1"] = Field(PANEL_SCHEMA, alias="schema")
    event_id: EventId
    timestamp: Timestamp = Field(description="ISO-8601 with a time zone: when the answer came")
    device_id: DeviceId
    decision_event_id: EventId = Field(description="the GRANTED it answers")
    credential: str | None = Field(max_length=128, description=(
        "the credential sent (or, not_sent, that would have been); null only with reason = "
        "not_sent, for a user who has none or whose stored one cannot be read (detail says which)"))
    verdict: Literal["GRANTED", "DENIED", "NO_RESPONSE"]
    command: dict[str, Any] | None = Field(None, description="the panel's LED/output command")
    latency_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    overlaps: EventId | None = Field(None, description=(
        "the decision_event_id of an earlier card read the panel polled less than 2 x "
        "verdict_timeout_s before this one: OSDP carries no request id, so the command may have "
        "been meant for that one. Left out of the payload when there is none, so a logger that "
        "predates it still accepts it"))
    reason: Literal["no_answer", "superseded", "not_polled", "reader_stopped", "send_failed",
                    "not_sent"] | None = Field(
        None, description=(
            "why a NO_RESPONSE: the panel polled the read and did not answer within "
            "verdict_timeout_s (no_answer), a newer read reached the panel first (superseded), the "
            "read never reached the panel (not_polled: offline, no secure channel, dropped by libosdp) "
            "or the reader stopped before the window ended (reader_stopped); send_failed: the "
            "credential, sent for a GRANTED the door's own relay carried out, broke on the way (a "
            "Wiegand frame broken on the wire; such a panel never answers): ``detail`` says how and "
            "what the panel may have read instead; not_sent: a GRANTED the door's own relay carried "
            "out whose credential was never sent to the panel (the user has none: ``credential`` "
            "null; the same badge within osdp.debounce_s; the reader stopping or not provisioned; a "
            "Wiegand frame refused at once): the panel's log has no read for that opening, "
            "``detail`` says why. Only on NO_RESPONSE; left out of the payload otherwise, and "
            "optional on it (doors that predate it). Loggers that predate not_sent "
            "quarantine a record carrying it"))
    detail: str | None = Field(None, max_length=1000, description=(
        "send_failed and not_sent only (and required with them): why the send failed or was not "
        "made, and any badge the panel may have read instead. Left out of the payload otherwise"))
    event_stream: EventStream = None
    event_seq: EventSeq = None
    clock_synchronized: ClockSynchronized = None

    @model_validator(mode="after")
    def _reason_only_for_no_response(self) -> PanelVerdictMessage:
        if self.reason is not None and self.verdict != "NO_RESPONSE":
            raise ValueError("reason is for NO_RESPONSE only")
        if (self.detail is not None) != (self.reason in WITH_DETAIL):
            raise ValueError("detail goes with reason = send_failed or not_sent, and only with them")
        if self.credential is None and self.reason != NOT_SENT:
            raise ValueError("credential is null only with reason = not_sent (none, or none readable)")
        return self

    def payload(self) -> dict:
        out = super().payload()
        for optional in ("overlaps", "reason", "detail"):
            if out.get(optional) is None:
                out.pop(optional, None)
        return out


PANEL_OUTPUT_SCHEMA = "facelink.panel-output/1"


OUTPUT_OFF = ("ended", "not_ended", "left_running", "off_failed")  # a panel-output record's relay values for the panel's output off


class PanelOutputMessage(EventMessage):
    """The access panel switched the door's output on or off (OSDP output control), on
    ``<prefix>/<device>/panel`` beside its verdicts: every opening the panel commands has a
    record of the door's, whether or not it answers a card read the door sent. Put in the outbox
    before the door's relay is driven (a record that cannot be made opens nothing, as for a
    GRANTED); if the relay then fails, a second one (``relay: failed``) refers to it. An off that
    locks the door at once is recorded after the running pulse was ended (locking is never
    withheld for a record): ``ended`` (``refers_to``: what that pulse was started for) or
    ``not_ended``. An off once the timed operation is done (control code 3) is recorded as it
    comes: ``left_running`` (``refers_to``: the pulse that ends at its time) or ``not_ended``."""

    schema_: Literal["facelink.panel-output/1"] = Field(PANEL_OUTPUT_SCHEMA, alias="schema")
    event_id: EventId
    timestamp: Timestamp = Field(description="ISO-8601 with a time zone: when the command came")
    device_id: DeviceId
    command: dict[str, Any] = Field(description="the panel's output command, as libosdp decoded it")
    likely_for: EventId | None = Field(description=(
        "the decision_event_id of the newest card read the panel had polled less than 2 x "
        "verdict_timeout_s before and not DENIED: the grant this opening most likely carries out (OSDP carries "
        "no request id). None: no read of the door's -- the panel's own unlock"))
    relay: Literal["opening", "no_relay", "failed", "ended", "not_ended", "left_running", "off_failed"] = Field(description=(
        "opening: the door's relay is driven next; no_relay: the door has none of its own (the "
        "panel's own strike opens the door); failed: the relay failed for the opening in refers_to. "
        "The panel's output off (control code 1 or 6): ended: the door's running relay pulse was "
        "ended, the lock locked before pulse_s; off_failed: the lock output's off failed (reason; "
        "relay_stuck on health, RelayError): the pulse in refers_to (and earlier_pulses) still holds "
        "the lock released until a retry works (since 2026-12-07, tenth session; before, not_ended); "
        "not_ended: no pulse of the door's relay was ended (none ran, a door command owns its "
        "timing, no relay of its own). The panel's output off once the timed operation is done (control "
        "code 3): left_running: the door's running pulse ends at its own time (pulse_s), the panel "
        "said nothing more opens the door for it; not_ended: no pulse of the door's ran (or a door "
        "command's timing is its own). Loggers older than ended/not_ended, than left_running, or "
        "than off_failed, quarantine these"))
    refers_to: EventId | None = Field(None, description=(
        "failed: the event_id of the opening; ended: what the ended pulse was started for -- a "
        "GRANTED decision's event_id or a panel opening's (relay opening) -- or null when not known; "
        "left_running: the same, for the pulse left to end at its time; off_failed: for the pulse "
        "the failed off did not end (null: none known, or an earlier failed off is still retried)"))
    reason: str | None = Field(None, max_length=300, description="failed, off_failed: why")
    earlier_pulses: list[EventId] | None = Field(None, min_length=1, max_length=64, description=(
        "ended / left_running / off_failed: what the older pulses of the door's relay were started for that the "
        "newest one (refers_to) overlapped and that were still inside their own pulse_s (a GRANTED, "
        "then the panel's opening for it or a second GRANTED): the lock was held released for them "
        "too, so the off ended them as well (ended) or they run on with it (left_running, "
        "off_failed); oldest "
        "first, at most 64. Left out of the payload when there are none, so a logger that predates "
        "it still accepts the record; one that carries it is quarantined by such a logger"))
    earlier_pulses_unnamed: int | None = Field(None, ge=1, description=(
        "ended / left_running / off_failed: how many more older pulses, still inside their own pulse_s, the "
        "off ended too (or that run on with it) than earlier_pulses can name (the door keeps the "
        "newest 64): their GRANTEDs show no ended_by. Left out of the payload when none (found "
        "in review: they were dropped without a trace)"))
    event_stream: EventStream = None
    event_seq: EventSeq = None
    clock_synchronized: ClockSynchronized = None

    @model_validator(mode="after")
    def _failure_refers(self) -> PanelOutputMessage:
        if self.relay == "failed" and (self.refers_to is None or self.reason is None):
            raise ValueError("relay = failed needs refers_to and reason")
        if self.relay == "off_failed" and self.reason is None:
            raise ValueError("relay = off_failed needs reason")
        if self.relay not in ("failed", "off_failed") and self.reason is not None:
            raise ValueError("reason goes with relay = failed or off_failed only")
        pulses = ("ended", "left_running", "off_failed")  # the values that name the door's pulses
        if self.relay not in ("failed", *pulses) and self.refers_to is not None:
            raise ValueError("refers_to goes with relay = failed, ended, left_running or off_failed only")
        if self.relay in OUTPUT_OFF and self.likely_for is not None:
            raise ValueError("an output off carries out no card read: likely_for is null")
        if self.earlier_pulses is not None and self.relay not in pulses:
            raise ValueError("earlier_pulses goes with relay = ended, left_running or off_failed only")
        if self.earlier_pulses_unnamed is not None and self.relay not in pulses:
            raise ValueError("earlier_pulses_unnamed goes with relay = ended, left_running or off_failed only")
        return self

    def payload(self) -> dict:
        out = super().payload()
        for optional in ("earlier_pulses", "earlier_pulses_unnamed"):
            if out.get(optional) is None:
                out.pop(optional, None)
        return out


ALARM_SCHEMA = "facelink.alarm/1"


class SyncAlarmMessage(EventMessage):
    """A door refused something it received from the network for collection sync
    (``<prefix>/<device>/alarm``): a forged, replayed, reordered, foreign or malformed change set
    or head, or a change set it could not apply. Nothing it refused changed the door."""

    schema_: Literal["facelink.alarm/1"] = Field(ALARM_SCHEMA, alias="schema")
    event_id: EventId
    timestamp: Timestamp
    device_id: DeviceId
    collection_id: str = Field(pattern=whole(COLLECTION_ID))
    reason: str = Field(pattern=r"^[A-Z_]{1,40}$", description="UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, REPLAY, GAP, "
                                                              "WRONG_COLLECTION, WRONG_MODEL, MALFORMED, APPLY_FAILED, DIVERGED, ...")
    detail: str = Field(max_length=500)
    topic: str = Field(max_length=300, description="where the refused message came from")
    seq: int | None = Field(None, ge=0, description="its seq, when its signature was valid")
    size: int = Field(ge=0, description="its size in bytes")
    event_stream: EventStream = None
    event_seq: EventSeq = None
    clock_synchronized: ClockSynchronized = None
