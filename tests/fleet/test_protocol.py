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
