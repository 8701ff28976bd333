"""facelink.sync/1: bodies, heads and requests are validated before anything reaches a door's store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facelink.errors import InvalidSignatureException
from facelink.fleet import protocol as p
from facelink.fleet.changeset import ChangeSetRejected, ChangeSetVerifier, encode
from facelink.fleet.signing import key_id


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _trusted(key: Ed25519PrivateKey) -> dict:
    return {key_id(key.public_key()): key.public_key()}


def _face(**kw) -> dict:
    face = {"face_id": "f-1", "user_id": "alice", "image_id": "i-1", "confidence": 99.5,
            "embedding": p.vector_to_b64(np.full(128, 128 ** -0.5, dtype=np.float32))}
    face.update(kw)
    return face


def test_delta_round_trip_keeps_the_embedding(key):
    vec = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    vec /= np.linalg.norm(vec)
    body = p.Delta(feed_position=7, faces_put=[p.FacePut(**_face(embedding=p.vector_to_b64(vec)))],
                   faces_deleted=["f-0"], users_put=[p.UserPut(user_id="alice", credential="26:1:2")])
    cs = ChangeSetVerifier(_trusted(key), "C", "v").check(encode(key, "C", "v", 1, body.model_dump()))
    parsed = p.parse_body(cs.body)
    assert isinstance(parsed, p.Delta)
    assert np.array_equal(parsed.faces_put[0].vector(), vec)
    assert parsed.faces_deleted == ["f-0"] and parsed.users_put[0].credential == "26:1:2"


@pytest.mark.parametrize("body", [
    {"kind": "grant_everyone"},
    {"kind": "delta", "feed_position": 1, "faces_put": [_face(embedding="not base64!")]},
    {"kind": "delta", "feed_position": 1,
     "faces_put": [_face(embedding=p.vector_to_b64(np.array([np.nan] * 128, dtype=np.float32)))]},
    {"kind": "delta", "feed_position": 1,  # five times too long: would score 5x against everyone
     "faces_put": [_face(embedding=p.vector_to_b64(np.full(128, 5 * 128 ** -0.5, dtype=np.float32)))]},
    {"kind": "delta", "feed_position": 1,  # another width
     "faces_put": [_face(embedding=p.vector_to_b64(np.full(64, 64 ** -0.5, dtype=np.float32)))]},
    {"kind": "delta", "feed_position": 1, "faces_put": [_face(user_id="a/b#")]},
    {"kind": "delta", "feed_position": 1, "extra": True},
])
def test_malformed_bodies_are_rejected(body):
    with pytest.raises(ChangeSetRejected) as exc:
        p.parse_body(body)
    assert exc.value.reason == "MALFORMED"


def test_head_is_signed_and_tampering_is_detected(key):
    head = p.Head(collection_id="C", face_model_version="v", seq=5, issued_at=100.0)
    message = p.encode_head(key, head)
    assert p.decode_head(_trusted(key), message) == head
    envelope = json.loads(message)
    envelope["payload"] = envelope["payload"].replace('"seq":5', '"seq":9')
    with pytest.raises(InvalidSignatureException):
        p.decode_head(_trusted(key), json.dumps(envelope).encode())
    with pytest.raises(InvalidSignatureException):
        p.decode_head(_trusted(Ed25519PrivateKey.generate()), message)


@pytest.mark.parametrize("raw", [b"{}", b"[1]", b'{"device_id": "../x"}', b"x" * 2000,
                                 b'{"device_id": "d", "from_seq": 0}'])
def test_bad_sync_requests_are_refused(raw):
    with pytest.raises(p.SyncMessageRejected):
        p.SyncRequest.decode(raw)


def test_heads_and_requests_without_a_nonce_carry_exactly_the_fields_older_parties_accept(key):
    """The nonce is optional and left out when unset: the retained head every door reads, and the
    range / snapshot requests every desk answers, are the bytes an older door or desk accepts
    (their models forbid any other field)."""
    head = p.Head(collection_id="C", face_model_version="v", seq=5, issued_at=100.0)
    payload = json.loads(json.loads(p.encode_head(key, head))["payload"])
    assert payload == {"schema": "facelink.head/1", "collection_id": "C", "face_model_version": "v", "seq": 5,
                       "issued_at": 100.0}
    request = json.loads(p.SyncRequest(device_id="door-1", from_seq=3).encode())
    assert request == {"schema": "facelink.sync-request/1", "device_id": "door-1", "from_seq": 3, "to_seq": None,
                       "snapshot": False}


def test_a_challenge_and_its_answer(key):
    nonce = "0123456789abcdef" * 2
    challenge = p.SyncRequest.decode(p.SyncRequest(device_id="door-1", nonce=nonce).encode())
    assert challenge.nonce == nonce and not challenge.snapshot
    answer = p.Head(collection_id="C", face_model_version="v", seq=5, issued_at=100.0, nonce=nonce)
    message = p.encode_head(key, answer)
    assert p.decode_head(_trusted(key), message) == answer and p.is_head(message)
    assert not p.is_head(encode(key, "C", "v", 1, {"kind": "rebase", "feed_position": 0}))
    assert not p.is_head(b"[" * 100) and not p.is_head(message + b" " * p.MAX_HEAD_BYTES)


@pytest.mark.parametrize("fields", [
    {"nonce": "0123456789abcdef"},  # too short
    {"nonce": "0123456789abcdef" * 4},  # too long
    {"nonce": "0123456789ABCDEF" * 2},  # not lowercase hex
    {"nonce": "0123456789abcdeg" * 2},
    {"nonce": 12345},
    {"nonce": "0123456789abcdef" * 2, "snapshot": True},  # a challenge asks for nothing else
    {"nonce": "0123456789abcdef" * 2, "to_seq": 4},
])
def test_bad_challenges_are_refused(fields):
    with pytest.raises(p.SyncMessageRejected):
        p.SyncRequest.decode(json.dumps({"device_id": "door-1", **fields}).encode())
