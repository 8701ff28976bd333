"""`facelink fleet status`: every door seen on the broker, from what doors publish anyway.

Listens for ``--deadline-s`` seconds to ``<prefix>/+/status`` (retained ``online``/``offline``,
the Last Will), ``<prefix>/+/health`` (periodic: ``outbox_depth``, and per followed collection
``sync.<C>.applied_seq``) and the retained signed heads of the collections, then reports per door:
online/offline, when it was last heard from, the seq it applied per collection against the desk's
head seq, and its outbox depth. Everything read is untrusted: a payload that is not what a door
sends is counted (``Ignored``) and skipped; a head counts only with a valid signature by a key
the desk trusts, and the desk's own journal (when the database is here) is the authority.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from facelink.errors import FaceLinkError
from facelink.mqtt.topics import all_heads, all_health, all_status

from .protocol import DEVICE_ID, decode_head

_DEVICE = re.compile(DEVICE_ID)
MAX_HEALTH_BYTES = 64 * 1024


@dataclass
class DoorSeen:
    device_id: str
    status: str | None = None  # online / offline (retained); None: never published one
    last_seen: float | None = None  # when the desk last received anything from it (unix s)
    outbox_depth: int | None = None
    applied: dict[str, int | None] = field(default_factory=dict)
    stale: dict[str, bool | None] = field(default_factory=dict)


class FleetStatus:
    """Collects what the doors publish (``on_message`` from the MQTT thread); ``report()``."""

    def __init__(self, prefix: str, trusted: dict[str, Ed25519PublicKey], clock=time.time) -> None:
        self.prefix = prefix.rstrip("/")
        self.trusted = trusted
        self.clock = clock
        self.doors: dict[str, DoorSeen] = {}
        self.heads: dict[str, int] = {}
        self.ignored = 0
        self._lock = threading.Lock()

    def subscriptions(self) -> list[str]:
        return [all_status(self.prefix), all_health(self.prefix), all_heads(self.prefix)]

    def on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            if not self._take(topic, payload):
                self.ignored += 1

    def _take(self, topic: str, payload: bytes) -> bool:
        parts = topic[len(self.prefix) + 1:].split("/") if topic.startswith(self.prefix + "/") else []
        if len(parts) == 3 and parts[0] == "collections" and parts[2] == "head":
            try:
                head = decode_head(self.trusted, payload)
            except FaceLinkError:
                return False
            if head.collection_id != parts[1]:
                return False
            self.heads[head.collection_id] = max(head.seq, self.heads.get(head.collection_id, 0))
            return True
        if len(parts) != 2 or parts[1] not in ("status", "health") or not _DEVICE.fullmatch(parts[0]):
            return False
        door = self.doors.get(parts[0]) or DoorSeen(parts[0])
        if parts[1] == "status":
            text = payload.decode("utf-8", "replace")
            if text not in ("online", "offline"):
                return False
            door.status = text
        elif not _health(door, payload):
            return False
        door.last_seen = self.clock()
        self.doors[parts[0]] = door
        return True

    def report(self, desk_heads: dict[str, int]) -> dict[str, Any]:
        """``desk_heads``: the seq the desk published per collection (its journal)."""
        now = self.clock()
        with self._lock:
            heads = {**self.heads, **desk_heads}
            doors = []
            for d in sorted(self.doors.values(), key=lambda d: d.device_id):
                colls = {}
                for c in sorted(set(d.applied) | set(heads)):
                    applied, head = d.applied.get(c), heads.get(c)
                    colls[c] = {"AppliedSeq": applied, "HeadSeq": head, "Stale": d.stale.get(c),
                                "Behind": head - applied if applied is not None and head is not None else None}
                doors.append({"DeviceId": d.device_id, "Status": d.status or "unknown",
                              "LastSeen": d.last_seen,
                              "SecondsSinceSeen": round(now - d.last_seen, 1) if d.last_seen else None,
                              "OutboxDepth": d.outbox_depth, "Collections": colls})
            return {"Doors": doors, "DeskHeads": heads, "Ignored": self.ignored}


def _health(door: DoorSeen, payload: bytes) -> bool:
    if len(payload) > MAX_HEALTH_BYTES:
        return False
    try:
        h = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON / not UTF-8; nested deeper than the parser goes
        return False
    if not isinstance(h, dict):
        return False
    depth = h.get("outbox_depth")
    if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0:
        door.outbox_depth = depth
    elif "outbox_depth" in h and depth is None:  # the door cannot read its outbox: unknown, not the last figure
        door.outbox_depth = None
    sync = h.get("sync")
    if isinstance(sync, dict):
        for c, s in list(sync.items())[:100]:
            if not isinstance(s, dict):
                continue
            seq = s.get("applied_seq")
            door.applied[str(c)[:255]] = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
            stale = s.get("stale")
            door.stale[str(c)[:255]] = stale if isinstance(stale, bool) else None
    return True


def collect(settings: Any, deadline_s: float) -> dict[str, Any]:
    """Listen ``deadline_s`` seconds with [mqtt]'s broker settings; the report."""
    from facelink.mqtt.client import MqttClient

    from .signing import load_private, load_trusted

    fleet, mqtt = settings.fleet, settings.mqtt
    trusted = load_trusted(list(fleet.trusted_keys))
    if fleet.signing_key is not None:
        from .signing import key_id

        public = load_private(fleet.signing_key).public_key()
        trusted[key_id(public)] = public
    status = FleetStatus(mqtt.topic_prefix, trusted)
    client = MqttClient(mqtt, client_id=f"{fleet.client_id}-status-{int(time.time() * 1000) % 10**9}",
                        subscriptions=status.subscriptions(), on_message=status.on_message)
    try:
        connected = client.wait_connected(max(deadline_s, 1.0))
        if connected:
            threading.Event().wait(deadline_s)
    finally:
        client.stop()
    restores: list[Any] = []
    absent: set[str] = set()
    report = status.report(_desk_heads(settings, restores, absent))
    report["DeskRestores"] = {r.collection_id: _restore_report(r, r.collection_id in absent) for r in restores}
    report["Broker"] = {"Host": mqtt.host, "Port": mqtt.port, "Connected": connected}
    report["ListenedS"] = deadline_s
    return report


def _restore_report(r: Any, absent: bool = False) -> dict[str, Any]:
    """A collection whose desk history went back (fleet/journal.py ``Restore``), for the report;
    ``absent``: the desk database does not hold the collection (an accepted hold waits for it)."""
    first, last = r.lost
    if not r.held and absent:
        accepted = (f"accepted, waiting: {r.collection_id} is not in the desk's database. Once it is created, "
                    f"the desk journals empty change sets through seq {r.evidence_seq + 1} before anything of it "
                    "is published")
    else:
        accepted = "accepted: the running desk journals past the lost seqs and publishes again"
    return {"State": "RESTORED" if r.held else "ACCEPTED", "LostSeqs": [first, last],
            "JournalSeq": r.journal_seq, "EvidenceSeq": r.evidence_seq, "DetectedAt": r.detected_at,
            "AcceptedAt": r.accepted_at,
            "Action": (f"held: the desk publishes nothing of {r.collection_id} and its doors go stale. Re-do the "
                       f"changes (deletions, revocations) made after the backup -- change sets {first}..{last} "
                       f"are lost -- then `facelink fleet accept-restore --collection {r.collection_id}`")
            if r.held else accepted}


def _desk_heads(settings: Any, restores: list[Any] | None = None, absent: set[str] | None = None) -> dict[str, int]:
    """The seq the desk's journal published per collection (when the desk database is here);
    ``restores`` receives its restore holds, held or accepted but not yet journaled past, and
    ``absent`` the collections of those the desk database does not hold (review 99)."""
    db = settings.store.database
    if not db.is_file():
        return {}
    from .journal import Journal

    journal = Journal(db, readonly=True)
    try:
        heads = {c: journal.published_seq(c) for c in journal.collections()}
        found = _pending_restores(journal, heads)
        missing = {r.collection_id for r in found if not journal.collection_in_store(r.collection_id)}
    except FaceLinkError:  # (StoreError) torn pages: a checkpoint under an immutable read?
        if not (journal.immutable and journal.writer_present()):
            raise
        heads = None
    finally:
        journal.close()
    if heads is not None and not (journal.immutable and journal.writer_present()):
        if restores is not None:
            restores[:] = found
        if absent is not None:
            absent |= missing
        return heads
    journal = Journal(db, readonly=True)  # a desk started during the immutable read: through its -wal
    try:
        heads = {c: journal.published_seq(c) for c in journal.collections()}
        found = _pending_restores(journal, heads)
        if restores is not None:
            restores[:] = found
        if absent is not None:
            absent |= {r.collection_id for r in found if not journal.collection_in_store(r.collection_id)}
        return heads
    finally:
        journal.close()


def _pending_restores(journal: Any, heads: dict[str, int]) -> list[Any]:
    """Holds not yet journaled past (an accepted one the desk has not acted on is still shown)."""
    return [r for r in journal.restores() if r.held or heads.get(r.collection_id, 0) <= r.evidence_seq]
