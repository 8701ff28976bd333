"""Every message from the broker is untrusted input. ``Intake.handle`` decides, for one message,
"a decision (or an access panel's verdict) to record" or "quarantine, with the reason" — it
never raises.

Checks, in order: size (at most ``MAX_PAYLOAD_BYTES``), UTF-8, JSON, a JSON object, the schema of
the topic (mqtt/schema.py, the same models the door builds its payloads with: ``.../decision``
DecisionMessage, ``.../panel`` PanelVerdictMessage or, by its ``schema``, PanelOutputMessage,
``.../alarm`` SyncAlarmMessage), and that the payload's
``device_id`` is the door the topic names. A message that fails is stored in the quarantine table
(raw bytes, topic, reason, time) and acknowledged; the logger carries on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator

from pydantic import ValidationError

from facelink.mqtt.schema import (
    PANEL_OUTPUT_SCHEMA,
    PANEL_SCHEMA,
    DecisionMessage,
    PanelOutputMessage,
    PanelVerdictMessage,
    SyncAlarmMessage,
)

from .store import AuditLog, Conflict, Quarantined

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024  # a decision is ~500 bytes
LOG_EVERY_S = 10.0  # a flood of garbage is one log line per period (every message is in the table)


class Rejected(Exception):
    """A message that is not a valid decision; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Message = DecisionMessage | PanelVerdictMessage | PanelOutputMessage | SyncAlarmMessage
MODELS: dict[str, type[Message]] = {
    "decision": DecisionMessage, "panel": PanelVerdictMessage, "alarm": SyncAlarmMessage}
# the panel topic carries two schemas: the panel's verdicts and the openings it commanded
PANEL_MODELS: dict[str, type[Message]] = {PANEL_SCHEMA: PanelVerdictMessage, PANEL_OUTPUT_SCHEMA: PanelOutputMessage}


def parse(topic: str, raw: bytes) -> Message:
    """The decision (or, on ``.../panel``, the panel verdict or opening; on ``.../alarm``, the
    sync alarm) in ``raw``, or ``Rejected`` naming what is wrong with it."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise Rejected(f"payload too large: {len(raw)} bytes (limit {MAX_PAYLOAD_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise Rejected(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejected(f"not a JSON object: {type(obj).__name__}")
    kind = topic.rsplit("/", 1)[-1]
    model = MODELS.get(kind, DecisionMessage)
    if kind == "panel":  # two schemas: by ``schema`` (none: a verdict, whose model has it by default)
        schema = obj.get("schema", PANEL_SCHEMA)
        if not isinstance(schema, str) or schema not in PANEL_MODELS:
            raise Rejected(f"schema: {str(schema)[:64]!r} is not one the panel topic carries "
                           f"({' or '.join(PANEL_MODELS)})")
        model = PANEL_MODELS[schema]
    try:
        message = model.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise Rejected(f"schema: {problems}") from None
    parts = topic.split("/")
    if len(parts) < 3 or parts[-2] != message.device_id:
        raise Rejected(f"device_id {message.device_id!r} is not the door of topic {topic!r}")
    return message


def record(audit: AuditLog, message: Message, payload: dict, received_at: str | None = None) -> bool:
    """Store a parsed message in its table; True when new (``Conflict``: its event id is there
    with other content). ``received_at``: when this logger first had it (None: now)."""
    if isinstance(message, PanelVerdictMessage):
        return audit.record_panel(payload, received_at=received_at)
    if isinstance(message, PanelOutputMessage):
        return audit.record_panel_output(payload, received_at=received_at)
    if isinstance(message, SyncAlarmMessage):
        return audit.record_alarm(payload, received_at=received_at)
    return audit.record(payload, received_at=received_at)


TABLES: dict[type[Message], str] = {DecisionMessage: "decisions", PanelVerdictMessage: "panel_verdicts",
                                    PanelOutputMessage: "panel_outputs", SyncAlarmMessage: "alarms"}


def requeue(audit: AuditLog) -> tuple[int, int]:
    """Read the quarantine again: each message this logger now accepts (e.g. one an older logger
    quarantined because a newer door's event carried a field it did not know) is recorded as if
    it had arrived when it was quarantined (its ``received_at`` is that time, not the requeue's),
    and leaves the quarantine. Returns (recorded, left in quarantine). A
    message kept only in part (over ``QUARANTINE_KEEP_BYTES``) or that conflicts stays."""
    recorded = left = 0
    for q in _pages(audit):
        try:
            if q.size != len(q.raw):
                raise Rejected("kept in part")
            message = parse(q.topic, q.raw)
            record(audit, message, message.payload(), q.received_at)  # when it came, not now (review)
        except (Rejected, Conflict):
            left += 1
            continue
        except Exception:  # noqa: BLE001 - untrusted bytes: left where they are
            log.exception("quarantined message %d could not be read again", q.id)
            left += 1
            continue
        audit.release(q.id, TABLES[type(message)], message.event_id)
        recorded += 1
    return recorded, left


REQUEUE_PAGE = 500  # quarantined messages read at once (64 KiB each at most: found in review, all at once)


def _pages(audit: AuditLog) -> Iterator[Quarantined]:
    after = 0
    while page := audit.quarantined(after_id=after, limit=REQUEUE_PAGE):
        yield from page
        after = page[-1].id


class Intake:
    """Validate → record (new decisions are passed to ``on_new``) or quarantine."""

    def __init__(self, audit: AuditLog, on_new: Callable[[dict], None] | None = None) -> None:
        self.audit = audit
        self.on_new = on_new
        self.recorded = 0
        self.quarantined = 0
        self._logged_at = -1e9
        self._unlogged = 0

    def handle(self, topic: str, raw: bytes) -> None:
        try:
            message = parse(topic, raw)
            payload = message.payload()
        except Rejected as exc:
            self._quarantine(topic, raw, exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - untrusted input must never stop the logger
            self._quarantine(topic, raw, f"unreadable: {type(exc).__name__}")
            return
        try:
            new = record(self.audit, message, payload)
        except Conflict as exc:  # not a redelivery: a forgery or a door reusing ids, kept for the staff
            self._quarantine(topic, raw, str(exc))
            return
        if new:
            self.recorded += 1
            if self.on_new is not None:
                self.on_new(payload)

    def _quarantine(self, topic: str, raw: bytes, reason: str) -> None:
        self.quarantined += 1
        self.audit.quarantine(topic, raw, reason)
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more since the last report)" if self._unlogged else ""
        log.warning("quarantined a message on %s (%d bytes): %s%s", topic, len(raw), reason, more)
        self._logged_at, self._unlogged = now, 0
