"""An unsigned message on the door's sync topics is parsed only as far as the signed envelope
needs: junk beside or inside the signature is refused before it becomes Python objects
(review 44: a 64 MB envelope with ``"junk": [{}, {}, ...]`` built 1.5 GB of objects on the door
before its signature was looked at)."""

from __future__ import annotations

import json
import tracemalloc

from facelink.fleet.changeset import encode
from facelink.fleet.protocol import UserPut

from .conftest import V
from .test_follower import Door, T, delta, door  # noqa: F401 - the door fixture

JUNK = b"{}," * 1_400_000  # 4.2 MB of the cheapest JSON objects


def test_junk_in_an_unsigned_envelope_is_refused_before_it_is_built(door, keys):  # noqa: F811
    d: Door = door()
    d.feed(encode(keys[0], "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    before = d.state()
    cases = {
        "beside the payload": b'{"payload":"x","signature":{},"junk":[' + JUNK + b'{}]}',
        "before the payload": b'{"junk":[' + JUNK + b'{}],"payload":"x","signature":{}}',
        "inside the signature": b'{"payload":"x","signature":{"Algorithm":"Ed25519","junk":[' + JUNK + b'{}]}}',
    }
    for name, message in cases.items():
        tracemalloc.start()
        try:
            d.feed(message)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # the message itself (and its text) is all the door may hold for it
        assert peak < 3 * len(message), f"{name}: {peak / 1e6:.0f} MB for a {len(message) / 1e6:.1f} MB message"
    assert d.follower.rejected == {"MALFORMED": 3}
    assert d.state() == before


def test_the_envelope_parser_still_takes_every_real_envelope(door, keys):  # noqa: F811
    """Key order, whitespace and escapes as any JSON encoder writes them; a forged or unsigned one
    keeps its reason."""
    d: Door = door()
    real = json.loads(encode(keys[0], "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    reordered = json.dumps({"signature": real["signature"], "payload": real["payload"]}, indent=2,
                           ensure_ascii=True).encode()
    d.feed(json.dumps({"payload": real["payload"]}).encode())
    d.feed(json.dumps({"payload": real["payload"], "signature": {**real["signature"], "KeyId": "0" * 16}}).encode())
    d.feed(b'{"payload":"x","payload":"y","signature":{}}')
    d.feed(b'{"payload":"x","signature":{}} trailing')
    assert d.follower.rejected == {"UNSIGNED": 1, "UNKNOWN_KEY": 1, "MALFORMED": 2}
    d.feed(reordered)
    assert d.follower.applied_seq == 1
