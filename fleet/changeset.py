"""Signed, ordered change sets (desk -> door), and the door's check of each one.

Wire format (JSON, UTF-8)::

    {"payload": "<canonical JSON text>", "signature": {"Algorithm": "Ed25519", "KeyId", "Signature"}}

where the payload is ``{"schema": "facelink.changes/1", "collection_id", "face_model_version",
"seq", "body"}``: ``seq`` counts the collection's change sets from 1 with no gaps. The signature
covers the payload's exact bytes, so nothing in it can be altered.

*History fingerprint.* The desk's change sets form a hash chain: a delta or rebase at seq ``n``
carries ``prev``, the :func:`payload_sha256` of the payload of the desk's change set ``n - 1``
(the exact signed text, as journaled and published; absent at seq 1), and a snapshot chunk (whose
seq is its base ``S``) carries ``position``, the :func:`payload_sha256` of the desk's payload at
``S``: the place in the desk's history the snapshot stands for. A door keeps the fingerprint of
the payload at its applied seq (its *position*: a delta's own payload hash, a snapshot's
``position``), and a change set at its next seq whose ``prev`` is another is ``DIVERGED``: the desk
signed it in another history than the one the door's copy was built from (its database restored
from an older copy), whatever seqs either side holds. Both fields are optional at the payload's
top level, which doors read key by key (an older door ignores them): a change set without
``prev`` (an older desk), or a door that does not know its position (it applied its seq before
this field, or took an older desk's snapshot), is accepted as before and the position learned
from then on. Heads carry no fingerprint (an older door refuses any new field in a head): a head
naming the door's seq in another history confirms the copy until the desk's next change set.

:class:`ChangeSetVerifier` is the door's gate, applied before anything touches its database:
unsigned, untrusted-key or altered (``InvalidSignatureException``), another collection or
FaceModelVersion, a ``seq`` already applied (``REPLAY``) or beyond the next one (``GAP``, with the
missing range to ask the desk for: never guessed) or one whose ``prev`` is not the door's
position (``DIVERGED``, below) are refused and change nothing. The verifier's seq and position
advance only through :meth:`ChangeSetVerifier.applied`, after the caller committed the change set.

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
import re
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
    # payload_sha256 of its payload: the door's position once it applied this delta. Required, and
    # a fingerprint (ValueError otherwise): an empty one, once a default, would be kept as the
    # door's position and compared with the next set's ``prev`` (review 90)
    sha256: str
    prev: str | None = None  # the desk's payload_sha256 at seq - 1 (None: a desk older than the field)
    position: str | None = None  # a snapshot chunk's: the desk's payload_sha256 at its seq

    def __post_init__(self) -> None:
        if not is_fingerprint(self.sha256):
            raise ValueError(f"sha256 {self.sha256!r} is not a SHA-256")
        for name in ("prev", "position"):
            value = getattr(self, name)
            if value is not None and not is_fingerprint(value):
                raise ValueError(f"{name} is not a SHA-256")


_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def is_fingerprint(value: object) -> bool:
    """Whether ``value`` is a history fingerprint: a SHA-256 as 64 lowercase hex digits."""
    return isinstance(value, str) and _FINGERPRINT.fullmatch(value) is not None


def _fingerprint(p: dict[str, Any], name: str) -> str | None:
    """The optional fingerprint field ``name`` of a payload: None, or 64 lowercase hex digits."""
    value = p.get(name)
    if value is not None and not is_fingerprint(value):
        raise ValueError(f"{name} is not a SHA-256")
    return value


def encode(private: Ed25519PrivateKey, collection_id: str, model_version: str, seq: int,
           body: dict[str, Any], *, prev: str | None = None, position: str | None = None) -> bytes:
    """The signed envelope of one change set. ``prev`` (a delta or rebase): the
    :func:`payload_sha256` of the desk's change set ``seq - 1``; ``position`` (a snapshot chunk):
    that of the desk's change set ``seq``. Each is left out when None (the payload is then exactly
    that of a desk older than the fields)."""
    fields: dict[str, Any] = {"schema": SCHEMA, "collection_id": collection_id,
                              "face_model_version": model_version, "seq": int(seq), "body": body}
    for name, value in (("prev", prev), ("position", position)):
        if value is not None:
            fields[name] = value
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return json.dumps({"payload": payload, "signature": sign(private, payload.encode())},
                      separators=(",", ":")).encode()


def payload_sha256(payload: bytes) -> str:
    """A change set's fingerprint in the desk's history (``prev``, ``position``, the door's
    position): the SHA-256 (hex) of its signed payload's exact bytes -- what the signature covers,
    so a broker cannot change it (unlike the envelope's, :func:`message_sha256`)."""
    return hashlib.sha256(payload).hexdigest()


def envelope_payload_sha256(message: bytes) -> str:
    """:func:`payload_sha256` of the payload of the signed envelope ``message`` (ValueError: not one)."""
    return payload_sha256(open_envelope(message)[1])


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
    """The door's check of the change sets of one collection (see the module docstring).
    ``position``: the :func:`payload_sha256` of the desk's payload at ``applied_seq`` as the door
    applied it (None: not known -- the next change set's ``prev`` is then taken as it comes)."""

    def __init__(self, trusted: dict[str, Ed25519PublicKey], collection_id: str, model_version: str,
                 applied_seq: int = 0, position: str | None = None) -> None:
        self.trusted = trusted
        self.collection_id = collection_id
        self.model_version = model_version
        self.applied_seq = applied_seq
        self.position = position
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
                           dict(p["body"]), key_id, payload_sha256(payload_bytes),
                           _fingerprint(p, "prev"), _fingerprint(p, "position"))
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
        if cs.prev is not None and self.position is not None and cs.prev != self.position:
            raise ChangeSetRejected("DIVERGED", f"seq {cs.seq} follows another change set at seq "
                                                f"{self.applied_seq} than the one this door applied "
                                                f"(prev {cs.prev[:12]}, the door's {self.position[:12]})",
                                    seq=cs.seq)
        return cs

    def applied(self, cs: ChangeSet) -> None:
        """The caller committed ``cs``: the next one expected is ``cs.seq + 1``, following the
        door's new position (a delta's payload hash, a snapshot's ``position``)."""
        if not (is_snapshot(cs) and cs.seq >= self.applied_seq) and cs.seq != self.applied_seq + 1:
            raise ChangeSetRejected("GAP", f"cannot record seq {cs.seq} after {self.applied_seq}")
        self.applied_seq, self.position = cs.seq, position_after(cs)


def position_after(cs: ChangeSet) -> str | None:
    """The door's position once it applied ``cs`` (verified): a snapshot's ``position`` (None from
    a desk older than the field), a delta's own payload hash. Persisted with the seq."""
    return cs.position if is_snapshot(cs) else cs.sha256


def is_snapshot(cs: ChangeSet) -> bool:
    return cs.body.get("kind") == "snapshot"
