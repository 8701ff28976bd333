"""Signed, ordered change sets (desk -> door), and the door's check of each one.

Wire format (JSON, UTF-8)::

    {"payload": "<canonical JSON text>", "signature": {"Algorithm": "Ed25519", "KeyId", "Signature"}}

where the payload is ``{"schema": "facelink.changes/1", "collection_id", "face_model_version",
"seq", "body"}``: ``seq`` counts the collection's change sets from 1 with no gaps. The signature
covers the payload's exact bytes, so nothing in it can be altered.

:class:`ChangeSetVerifier` is the door's gate, applied before anything touches its database:
unsigned, untrusted-key or altered (``InvalidSignatureException``), another collection or
FaceModelVersion, a ``seq`` already applied (``REPLAY``) or beyond the next one (``GAP``, with the
missing range to ask the desk for: never guessed) are refused and change nothing. The
verifier's position advances only through :meth:`ChangeSetVerifier.applied`, after the caller
committed the change set.

Snapshot chunks (body ``kind = "snapshot"``) are checked for signature, collection and
FaceModelVersion but not for order: their ``seq`` is the snapshot's base; one below the applied
seq would roll the door back and is ``REPLAY``. :meth:`ChangeSetVerifier.applied` with a
snapshot moves the position to its base. The transport and the door's atomic apply are
``facelink.fleet.follower`` and ``facelink.fleet.replica``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facelink.errors import FaceLinkError

from .signing import open_envelope, sign, verify

SCHEMA = "facelink.changes/1"
MAX_BYTES = 64 * 1024 * 1024


class ChangeSetRejected(FaceLinkError):
    """A change set the door refuses (``reason``: REPLAY, GAP, WRONG_COLLECTION, ...)."""

    code = "ChangeSetRejected"
    exit_code = 10

    def __init__(self, reason: str, message: str, missing: tuple[int, int] | None = None,
                 seq: int | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.missing = missing  # GAP: the (first, last) seq to ask the desk for
        self.seq = seq  # REPLAY, GAP: the (signed, verified) seq of the refused change set


@dataclass(frozen=True)
class ChangeSet:
    collection_id: str
    face_model_version: str
    seq: int
    body: dict[str, Any]
    key_id: str


def encode(private: Ed25519PrivateKey, collection_id: str, model_version: str, seq: int,
           body: dict[str, Any]) -> bytes:
    payload = json.dumps({"schema": SCHEMA, "collection_id": collection_id,
                          "face_model_version": model_version, "seq": int(seq), "body": body},
                         sort_keys=True, separators=(",", ":"))
    return json.dumps({"payload": payload, "signature": sign(private, payload.encode())},
                      separators=(",", ":")).encode()


def message_sha256(message: bytes) -> str:
    """The SHA-256 a door keeps of a change set it applied (``sync_seen``), to tell a re-delivery
    from other bytes signed at that seq: that of the envelope :func:`encode` gives for its payload
    and signature, so the bytes the desk sent, whatever spacing, key order or base64 spelling
    of the signature the message arrived in. A broker can re-space an envelope without the desk's
    key (the signature covers the payload only); hashed as it came, one re-sent with a space
    looked like the desk signing another change set at that seq: its doors DIVERGED, stale until
    the desk journaled past them (found in review). Not an envelope: the SHA-256 of the bytes."""
    try:
        payload, _, signature = open_envelope(message)
        spelled = {"Algorithm": signature["Algorithm"], "KeyId": signature["KeyId"],
                   "Signature": base64.b64encode(base64.b64decode(signature["Signature"], validate=True)).decode()}
        message = json.dumps({"payload": payload, "signature": spelled}, separators=(",", ":")).encode()
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeEncodeError):
        pass
    return hashlib.sha256(message).hexdigest()


class ChangeSetVerifier:
    """The door's check of the change sets of one collection (see the module docstring)."""

    def __init__(self, trusted: dict[str, Ed25519PublicKey], collection_id: str, model_version: str,
                 applied_seq: int = 0) -> None:
        self.trusted = trusted
        self.collection_id = collection_id
        self.model_version = model_version
        self.applied_seq = applied_seq
        self.rejected: dict[str, int] = {}

    def check(self, message: bytes) -> ChangeSet:
        try:
            return self._check(message)
        except ChangeSetRejected as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            raise
        except FaceLinkError as exc:  # signature problems
            reason = exc.message.split(":", 1)[0]
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            raise ChangeSetRejected(reason, exc.message.split(": ", 1)[-1]) from None

    def _check(self, message: bytes) -> ChangeSet:
        if len(message) > MAX_BYTES:
            raise ChangeSetRejected("MALFORMED", f"{len(message)} bytes is too large")
        try:
            payload_text, payload_bytes, signature = open_envelope(message)
        except ValueError as exc:
            raise ChangeSetRejected("MALFORMED", str(exc)) from None
        key_id = verify(self.trusted, payload_bytes, signature)
        try:
            p = json.loads(payload_text)
            cs = ChangeSet(str(p["collection_id"]), str(p["face_model_version"]), int(p["seq"]),
                           dict(p["body"]), key_id)
            if p.get("schema") != SCHEMA:
                raise ValueError(p.get("schema"))
        except (ValueError, TypeError, KeyError, RecursionError):
            raise ChangeSetRejected("MALFORMED", "payload does not follow facelink.changes/1") from None
        if cs.collection_id != self.collection_id:
            raise ChangeSetRejected("WRONG_COLLECTION", f"for {cs.collection_id!r}, this door follows "
                                                        f"{self.collection_id!r}")
        if cs.face_model_version != self.model_version:
            raise ChangeSetRejected("WRONG_MODEL", f"FaceModelVersion {cs.face_model_version}, the door "
                                                   f"runs {self.model_version}")
        if is_snapshot(cs):
            if cs.seq < self.applied_seq:
                raise ChangeSetRejected("REPLAY", f"snapshot at seq {cs.seq} is older than the applied "
                                                  f"{self.applied_seq}", seq=cs.seq)
            return cs
        if cs.seq <= self.applied_seq:
            raise ChangeSetRejected("REPLAY", f"seq {cs.seq} already applied (at {self.applied_seq})",
                                    seq=cs.seq)
        if cs.seq > self.applied_seq + 1:
            raise ChangeSetRejected("GAP", f"seq {cs.seq} after {self.applied_seq}",
                                    missing=(self.applied_seq + 1, cs.seq - 1), seq=cs.seq)
        return cs

    def applied(self, cs: ChangeSet) -> None:
        """The caller committed ``cs``: the next one expected is ``cs.seq + 1``."""
        if is_snapshot(cs) and cs.seq >= self.applied_seq:
            self.applied_seq = cs.seq
            return
        if cs.seq != self.applied_seq + 1:
            raise ChangeSetRejected("GAP", f"cannot record seq {cs.seq} after {self.applied_seq}")
        self.applied_seq = cs.seq


def is_snapshot(cs: ChangeSet) -> bool:
    return cs.body.get("kind") == "snapshot"
