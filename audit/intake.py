"""Every message from the broker is untrusted input. ``Intake.handle`` decides, for one message,
"a decision (or an access panel's verdict) to record" or "quarantine, with the reason" — it
never raises.

Checks, in order: size (at most ``MAX_PAYLOAD_BYTES``), UTF-8, JSON, a JSON object, the schema of
the topic (mqtt/schema.py, the same models the door builds its payloads with: ``.../decision``
DecisionMessage, ``.../panel`` PanelVerdictMessage or, by its ``schema``, PanelOutputMessage,
``.../alarm`` SyncAlarmMessage), and that the payload's
``device_id`` is the door the topic names. A message that fails is stored in the quarantine table
(raw bytes, topic, reason, time) and acknowledged; the logger carries on.

A message it cannot *store* (the database busy past its timeout because another writer holds it,
disk full, an I/O error) is neither: ``handle`` tries again a few times (``STORE_TRIES``, over a
few seconds), then raises ``StoreUnavailable`` and the logger's client does not acknowledge it,
so the broker keeps it (found in review 95: it was acknowledged, and lost). From then on the intake
*holds*: every message is refused at once (not acknowledged either) until ``retry_held`` stores
the first one held -- the logger then reconnects its session and the broker sends every
unacknowledged message again (recorded once: the store keeps one record per event id).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

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
STORE_TRIES = 3  # a message the database cannot take: tried this often ...
STORE_RETRY_S = 1.0  # ... this far apart (each try may wait the connection's 5 s busy timeout too)
HOLD_LOG_EVERY_S = 60.0  # while the database cannot store: one ERROR line per period
# what the store raises when it cannot write now (busy, disk full, I/O error, read-only): not the
# message's fault, so neither recorded nor quarantined, and never acknowledged
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
# ... except what one message's content makes the database refuse (a constraint, a value it cannot
# bind): that message is quarantined, or one bad message would hold every later one at the broker
MESSAGE_ERRORS: tuple[type[BaseException], ...] = (
    sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


class StoreUnavailable(Exception):
    """The audit database cannot store a message now: it must stay at the broker (no PUBACK)."""


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
    """Validate → record (new decisions are passed to ``on_new``) or quarantine; or, when the
    database cannot store, ``StoreUnavailable`` (the message must not be acknowledged)."""

    def __init__(self, audit: AuditLog, on_new: Callable[[dict], None] | None = None) -> None:
        self.audit = audit
        self.on_new = on_new
        self.recorded = 0
        self.quarantined = 0
        self.refused = 0  # messages not stored (not acknowledged) since the start
        self._logged_at = -1e9
        self._unlogged = 0
        self._state = threading.Lock()
        self._held: tuple[str, bytes] | None = None  # the first message not stored, while holding
        self._held_since = 0.0
        self._held_count = 0  # messages refused while holding
        self._held_logged_at = -1e9
        # the held message ``retry_held`` stored: the broker sends it again after the reconnect,
        # and that copy is acknowledged as it is (found in review 100: a quarantined one was
        # quarantined a second time; the quarantine keeps every copy)
        self._stored_held: tuple[str, bytes] | None = None

    @property
    def holding(self) -> bool:
        """True while the database cannot store: messages are refused until ``retry_held`` stores."""
        return self._held is not None

    def handle(self, topic: str, raw: bytes) -> None:
        """Store one message (record or quarantine); ``StoreUnavailable`` if it could not be."""
        with self._state:  # the database failed: no 5-second wait per message on paho's thread
            holding = self._held is not None
            if holding:
                self.refused += 1
                self._held_count += 1
            elif self._stored_held is not None and self._stored_held == (topic, bytes(raw)):
                self._stored_held = None
                return  # stored by retry_held: this is the broker's copy sent again
        if holding:
            raise StoreUnavailable("audit database cannot store (holding messages at the broker)")
        failure: BaseException | None = None
        for attempt in range(STORE_TRIES):
            if attempt:
                time.sleep(STORE_RETRY_S)
            try:
                new = self._store(topic, raw)
            except STORE_ERRORS as exc:
                failure = exc
                continue
            self._announce(new)
            return
        self._refuse(topic, raw, failure)

    def retry_held(self) -> bool:
        """While holding, try to store the first message held once; True when the database stores
        again (or nothing is held): the caller then has the broker send the others again."""
        held = self._held
        if held is None:
            return True
        try:
            new = self._store(*held)
        except STORE_ERRORS as exc:
            now = time.monotonic()
            with self._state:
                due = now - self._held_logged_at >= HOLD_LOG_EVERY_S
                if due:
                    self._held_logged_at = now
                count = self._held_count
            if due:
                log.error("audit database still cannot store (%s: %s) after %.0f s: %d message(s) NOT "
                          "acknowledged, held at the broker", type(exc).__name__, exc, now - self._held_since, count)
            return False
        with self._state:
            count, since = self._held_count, self._held_since
            self._held, self._stored_held = None, held
        log.warning("audit database stores again after %.0f s: asking the broker again for the %d message(s) "
                    "held there", time.monotonic() - since, count)
        self._announce(new)
        return True

    def _refuse(self, topic: str, raw: bytes, failure: BaseException | None) -> NoReturn:
        with self._state:
            self.refused += 1
            first = self._held is None
            if first:
                self._held, self._held_since, self._held_count = (topic, bytes(raw)), time.monotonic(), 0
                self._held_logged_at = time.monotonic()
            self._held_count += 1
        if first:
            log.error("audit database cannot store (%s: %s): messages are NOT acknowledged and wait at the "
                      "broker until it can (at most the broker's in-flight limit unacknowledged, the rest "
                      "queued there)", type(failure).__name__, failure)
        raise StoreUnavailable(f"audit database cannot store: {failure}")

    def _store(self, topic: str, raw: bytes) -> dict | None:
        """Record or quarantine one message; the payload when newly recorded. ``STORE_ERRORS``
        when the database could not take it (nothing counted)."""
        try:
            message = parse(topic, raw)
            payload = message.payload()
        except Rejected as exc:
            self._quarantine(topic, raw, exc.reason)
            return None
        except Exception as exc:  # noqa: BLE001 - untrusted input must never stop the logger
            self._quarantine(topic, raw, f"unreadable: {type(exc).__name__}")
            return None
        try:
            new = record(self.audit, message, payload)
        except Conflict as exc:  # not a redelivery: a forgery or a door reusing ids, kept for the staff
            self._quarantine(topic, raw, str(exc))
            return None
        except MESSAGE_ERRORS as exc:  # this message, not the database: kept for the staff
            log.error("the audit database refused a message on %s (%s: %s); quarantined", topic,
                      type(exc).__name__, exc)
            self._quarantine(topic, raw, f"not recorded: {type(exc).__name__}: {exc}"[:300])
            return None
        except STORE_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - a message the store cannot take for good: kept
            log.exception("could not record a message on %s; quarantined", topic)
            self._quarantine(topic, raw, f"not recorded: {type(exc).__name__}")
            return None
        if new:
            self.recorded += 1
            return payload
        return None

    def _announce(self, payload: dict | None) -> None:
        if payload is not None and self.on_new is not None:
            try:
                self.on_new(payload)
            except Exception:  # noqa: BLE001 - recorded already: the message is acknowledged
                log.exception("could not pass on a recorded decision")

    def _quarantine(self, topic: str, raw: bytes, reason: str) -> None:
        self.audit.quarantine(topic, raw, reason)
        self.quarantined += 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._unlogged += 1
            return
        more = f" (and {self._unlogged} more since the last report)" if self._unlogged else ""
        log.warning("quarantined a message on %s (%d bytes): %s%s", topic, len(raw), reason, more)
        self._logged_at, self._unlogged = now, 0
