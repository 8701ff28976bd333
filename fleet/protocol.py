"""Desk -> door collection sync over MQTT: the one definition of what travels (facelink.sync/1).

Topics (spelled in ``facelink.mqtt.topics``: ``CollectionTopics``, ``DeviceTopics.sync_request``)::

    <prefix>/collections/<C>/changes          desk -> doors, QoS 1: signed change sets, seq 1, 2, ...
    <prefix>/collections/<C>/head             desk -> doors, QoS 1, retained: signed Head, every
                                              ``heartbeat_s`` and after every change set
    <prefix>/<device>/sync/<C>/request        door -> desk, QoS 1: SyncRequest (unsigned, untrusted),
                                              on the door's own topic (only that door's user may write it): the desk
                                              answers it only if it names that ``<device>``
    <prefix>/collections/<C>/request          door -> desk, QoS 1: the same from doors not yet
                                              upgraded (``fleet.accept_shared_request_topic``)
    <prefix>/collections/<C>/reply/<device>   desk -> one door, QoS 1: re-sent change sets and
                                              snapshot chunks answering that door's request, and
                                              the signed Head answering its freshness challenge

Every change set and snapshot chunk is the signed envelope of ``facelink.fleet.changeset``
(schema ``facelink.changes/1``; ``seq`` inside the signed payload) whose ``body`` is one of:

- :class:`Delta` (``kind = "delta"``): state, not operations — ``faces_put`` are whole face rows
  (upsert by FaceId, embedding included), ``faces_deleted`` FaceIds, ``users_put`` users with
  their credential, ``users_deleted`` UserIds, ``collection_deleted``. Applying a delta twice
  gives the same state, so a door applies it in one transaction, then records ``seq``.
- :class:`Rebase` (``kind = "rebase"``): the desk's change feed could not express what changed
  as a delta (the collection was re-created, or the publisher fell further behind than the feed
  keeps). The door changes nothing and asks for a snapshot.
- :class:`SnapshotChunk` (``kind = "snapshot"``): chunk ``chunk`` of ``chunks`` of the whole
  collection as of ``seq`` (the payload's seq is the snapshot's base). The door stages all chunks
  of one ``snapshot_id``, then replaces its copy in one transaction and records ``seq``; deltas
  from ``seq + 1`` follow. Chunks are at most :data:`CHUNK_FACES` faces.

*History fingerprint* (``facelink.fleet.changeset``): beside ``body``, a delta's or rebase's
payload carries ``prev`` (the SHA-256 of the desk's payload at ``seq - 1``) and a snapshot chunk's
``position`` (that of the desk's payload at its base ``seq``), top-level and optional: a door keeps
the fingerprint at its applied seq and refuses a change set that follows another one as DIVERGED
(the desk's history went back). Doors read the payload's top-level fields by name, so an older
door ignores both; the body models stay ``extra="forbid"``.

A :class:`Head` tells a door the newest seq the desk has published and when: a door that has
applied ``head.seq`` when a head newer than the last one arrives is *confirmed up to date* at that
moment; a head with a seq beyond the door's is a gap (ask for the range). Heads are signed like
change sets (the same envelope, schema ``facelink.head/1``).

A :class:`SyncRequest` comes from any client that can publish: the desk answers only from its own
signed journal, bounds the range and rate-limits per device. Nothing in it can change a door.

*Freshness challenge.* A SyncRequest with a ``nonce`` (:data:`NONCE_HEX` hex digits the door drew
at random) asks for nothing but the desk's head *now*: the desk answers it only on the door's own
request topic, with a signed Head carrying that nonce, on ``reply/<device>`` (never on the shared,
retained ``head`` topic, whose heads stay exactly as they were: an older door reads them as
before). Such a head cannot have been signed before the door sent the nonce, so it confirms the
copy as of that moment whatever the desk's clock says (see ``follower.Follower``). Heads carry no
history fingerprint: an older door refuses a head with any new field (below), so a head of a
desk whose history went back naming exactly the door's seq confirms the door's copy until the
desk's next change set, whose ``prev`` the door then refuses. Both are
``facelink.head/1`` / ``facelink.sync-request/1`` with one optional field: a desk or door older
than the field refuses a message carrying it as MALFORMED (``extra="forbid"``) and changes nothing.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from facelink.enroll.validate import COLLECTION_ID, EXTERNAL_IMAGE_ID, USER_ID, whole
from facelink.errors import FaceLinkError
from facelink.models.embedder import EMBEDDING_DIM, not_embeddings
from facelink.mqtt.topics import DEVICE_ID

from .signing import open_envelope, sign, verify

HEAD_SCHEMA = "facelink.head/1"
REQUEST_SCHEMA = "facelink.sync-request/1"
CHUNK_FACES = 2_000  # faces per snapshot chunk (~1.4 MB of JSON at 128-d float32)
MAX_REQUEST_RANGE = 1_000  # change sets re-sent for one request; a door further behind gets a snapshot
MAX_REQUEST_BYTES = 1024  # a SyncRequest larger than this is MALFORMED (the desk drops it on arrival)
NONCE_HEX = 32  # a freshness challenge's nonce: 16 random bytes, lowercase hex
NONCE = rf"^[0-9a-f]{{{NONCE_HEX}}}$"
MAX_HEAD_BYTES = 4096  # a signed head is never larger (anything larger is MALFORMED)
SNAPSHOT_REPEAT_S = 30.0  # the desk sends a door no second snapshot this soon (unless a Rebase came since)
FACE_ID = r"^[A-Za-z0-9_\-]{1,64}$"
_STRICT = ConfigDict(extra="forbid", frozen=True)


class SyncMessageRejected(FaceLinkError):
    """A head or sync request that does not follow facelink.sync/1 (``reason`` says why)."""

    code = "SyncMessageRejected"
    exit_code = 10

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class FacePut(BaseModel):
    """One face row as the desk holds it (upsert by ``face_id``)."""

    model_config = _STRICT
    face_id: str = Field(pattern=FACE_ID)
    user_id: str | None = Field(None, pattern=whole(USER_ID))
    external_image_id: str | None = Field(None, pattern=whole(EXTERNAL_IMAGE_ID))
    image_id: str = Field(max_length=64)
    image_sha256: str = Field("", max_length=64)
    confidence: float = Field(ge=0, le=100)
    bounding_box: dict[str, float] = Field(default_factory=dict, max_length=4)
    embedding: str = Field(max_length=16_384, description="base64 of little-endian float32")

    @field_validator("embedding")
    @classmethod
    def _unit_vector(cls, v: str) -> str:
        vector_from_b64(v)
        return v

    def vector(self) -> np.ndarray:
        return vector_from_b64(self.embedding)


class UserPut(BaseModel):
    model_config = _STRICT
    user_id: str = Field(pattern=whole(USER_ID))
    credential: str | None = Field(None, max_length=128)


class Delta(BaseModel):
    model_config = _STRICT
    kind: Literal["delta"] = "delta"
    feed_position: int = Field(ge=0, description="the desk's change-feed position after this set")
    faces_put: list[FacePut] = Field(default_factory=list, max_length=CHUNK_FACES * 5)
    faces_deleted: list[Annotated[str, Field(pattern=FACE_ID)]] = Field(default_factory=list)
    users_put: list[UserPut] = Field(default_factory=list)
    users_deleted: list[Annotated[str, Field(pattern=whole(USER_ID))]] = Field(default_factory=list)
    collection_deleted: bool = False


class Rebase(BaseModel):
    model_config = _STRICT
    kind: Literal["rebase"] = "rebase"
    feed_position: int = Field(ge=0)
    reason: str = Field("", max_length=200)


class SnapshotChunk(BaseModel):
    model_config = _STRICT
    kind: Literal["snapshot"] = "snapshot"
    snapshot_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    chunk: int = Field(ge=0)
    chunks: int = Field(ge=1, le=100_000)
    feed_position: int = Field(ge=0)
    faces_put: list[FacePut] = Field(default_factory=list, max_length=CHUNK_FACES)
    users_put: list[UserPut] = Field(default_factory=list, max_length=CHUNK_FACES * 5)


Body = Delta | Rebase | SnapshotChunk
_BODIES: dict[str, type[BaseModel]] = {"delta": Delta, "rebase": Rebase, "snapshot": SnapshotChunk}


def parse_body(body: dict[str, Any]) -> Body:
    """A verified change set's body as its model; ChangeSetRejected MALFORMED otherwise."""
    from .changeset import ChangeSetRejected

    model = _BODIES.get(body.get("kind")) if isinstance(body, dict) else None
    if model is None:
        raise ChangeSetRejected("MALFORMED", f"unknown body kind {body.get('kind') if isinstance(body, dict) else body!r}")
    try:
        return model.model_validate(body)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ChangeSetRejected("MALFORMED", f"body: {exc.errors()[0]['msg']}") from None


def vector_to_b64(v: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode()


def vector_from_b64(text: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("embedding is not base64") from None
    if len(raw) != 4 * EMBEDDING_DIM:
        raise ValueError(f"embedding is not {EMBEDDING_DIM} float32 values")
    v = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if len(not_embeddings(v[None, :])):
        raise ValueError("embedding is not a unit vector of finite values")
    return v


class Head(BaseModel):
    """The desk's newest seq for one collection, signed (retained on ``.../head``; with ``nonce``:
    the answer to one door's freshness challenge, on that door's ``reply/<device>`` only)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    schema_: Literal["facelink.head/1"] = Field(HEAD_SCHEMA, alias="schema")
    collection_id: str = Field(pattern=whole(COLLECTION_ID))
    face_model_version: str = Field(max_length=128)
    seq: int = Field(ge=0)
    issued_at: float = Field(ge=0, description="desk clock, unix seconds")
    nonce: str | None = Field(None, pattern=NONCE, description="the challenge this head answers")


def encode_head(private: Ed25519PrivateKey, head: Head) -> bytes:
    """The signed envelope of ``head``. A head without a nonce has exactly the fields of
    facelink.head/1 before the nonce existed (an older door refuses any other field)."""
    fields = head.model_dump(by_alias=True, exclude={"nonce"} if head.nonce is None else None)
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return json.dumps({"payload": payload, "signature": sign(private, payload.encode())},
                      separators=(",", ":")).encode()


def decode_head(trusted: dict[str, Ed25519PublicKey], message: bytes) -> Head:
    """A verified Head; SyncMessageRejected (MALFORMED) or InvalidSignatureException otherwise."""
    if len(message) > MAX_HEAD_BYTES:
        raise SyncMessageRejected("MALFORMED", "head too large")
    try:
        payload, payload_bytes, signature = open_envelope(message)
    except ValueError as exc:
        raise SyncMessageRejected("MALFORMED", str(exc)) from None
    verify(trusted, payload_bytes, signature)
    try:
        return Head.model_validate_json(payload)
    except ValidationError:
        raise SyncMessageRejected("MALFORMED", "payload does not follow facelink.head/1") from None


def is_head(message: bytes) -> bool:
    """A message on ``reply/<device>`` is a head (a challenge's answer), not a change set: at most
    :data:`MAX_HEAD_BYTES`, a signed envelope whose payload names :data:`HEAD_SCHEMA`. Only routes
    the message: both paths verify it in full."""
    if len(message) > MAX_HEAD_BYTES:
        return False
    try:
        payload = json.loads(open_envelope(message)[0])
    except (ValueError, RecursionError):
        return False
    return isinstance(payload, dict) and payload.get("schema") == HEAD_SCHEMA


class SyncRequest(BaseModel):
    """A door asking the desk for change sets ``from_seq..to_seq`` (None: up to the head) or a
    snapshot; or, with ``nonce``, only for a head answering that challenge (then ``snapshot`` and
    ``to_seq`` must be unset). Untrusted: validated, bounded and rate-limited by the desk."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    schema_: Literal["facelink.sync-request/1"] = Field(REQUEST_SCHEMA, alias="schema")
    device_id: str = Field(pattern=DEVICE_ID)
    from_seq: int = Field(1, ge=1)
    to_seq: int | None = Field(None, ge=1)
    snapshot: bool = False
    nonce: str | None = Field(None, pattern=NONCE)

    @model_validator(mode="after")
    def _challenge_asks_for_nothing_else(self) -> SyncRequest:
        if self.nonce is not None and (self.snapshot or self.to_seq is not None):
            raise ValueError("a challenge (nonce) asks for no snapshot or range")
        return self

    def encode(self) -> bytes:
        """Its JSON; a request without a nonce has exactly the fields of facelink.sync-request/1
        before the nonce existed (an older desk refuses any other field)."""
        return self.model_dump_json(by_alias=True, exclude={"nonce"} if self.nonce is None else None).encode()

    @classmethod
    def decode(cls, message: bytes) -> SyncRequest:
        if len(message) > MAX_REQUEST_BYTES:
            raise SyncMessageRejected("MALFORMED", "request too large")
        try:
            return cls.model_validate_json(message)
        except ValidationError:
            raise SyncMessageRejected("MALFORMED", "not a facelink.sync-request/1") from None
