"""The door's gate for signed change sets: in-order sets pass; forged, replayed, reordered,
foreign and other-model sets are refused and counted, and never advance the position."""

from __future__ import annotations

import json

import pytest

from facelink.fleet.changeset import ChangeSetRejected, ChangeSetVerifier, encode
from facelink.fleet.signing import generate_keypair, load_private, load_trusted

V = "yunet-2023mar+sface-2021dec/int8bq"


@pytest.fixture()
def keys(tmp_path):
    generate_keypair(tmp_path / "desk.key", tmp_path / "desk.pub")
    generate_keypair(tmp_path / "evil.key", tmp_path / "evil.pub")
    return load_private(tmp_path / "desk.key"), load_private(tmp_path / "evil.key"), \
        load_trusted([tmp_path / "desk.pub"])


def _apply(verifier, message):
    cs = verifier.check(message)
    verifier.applied(cs)
    return cs


def test_in_order_sets_pass(keys):
    desk, _, trusted = keys
    door = ChangeSetVerifier(trusted, "staff", V)
    for seq in (1, 2, 3):
        cs = _apply(door, encode(desk, "staff", V, seq, {"removed_faces": [f"f{seq}"]}))
        assert cs.body == {"removed_faces": [f"f{seq}"]}
    assert door.applied_seq == 3 and door.rejected == {}


def test_forged_replayed_reordered_and_foreign_sets_are_refused(keys):
    desk, evil, trusted = keys
    door = ChangeSetVerifier(trusted, "staff", V)
    _apply(door, encode(desk, "staff", V, 1, {"removed_faces": ["a"]}))
    second = encode(desk, "staff", V, 2, {"removed_faces": ["b"]})
    cases = []
    # forged: signed by a key the door does not trust
    cases.append(("UNKNOWN_KEY", encode(evil, "staff", V, 2, {"added_users": ["mallory"]})))
    # tampered: the desk's set with its body changed after signing
    env = json.loads(second)
    env["payload"] = env["payload"].replace('"b"', '"c"')
    cases.append(("BAD_SIGNATURE", json.dumps(env).encode()))
    # unsigned
    cases.append(("UNSIGNED", json.dumps({"payload": json.loads(second)["payload"]}).encode()))
    # replayed: set 1 again
    cases.append(("REPLAY", encode(desk, "staff", V, 1, {"removed_faces": ["a"]})))
    # reordered: set 3 before set 2
    cases.append(("GAP", encode(desk, "staff", V, 3, {"removed_faces": ["d"]})))
    cases.append(("WRONG_COLLECTION", encode(desk, "other", V, 2, {})))
    cases.append(("WRONG_MODEL", encode(desk, "staff", V + "-x", 2, {})))
    cases.append(("MALFORMED", b"\xff not json"))
    for reason, message in cases:
        with pytest.raises(ChangeSetRejected) as info:
            door.check(message)
        assert info.value.reason == reason
        assert door.applied_seq == 1  # nothing moved
    assert door.rejected == {r: 1 for r, _ in cases}
    with pytest.raises(ChangeSetRejected) as gap:
        door.check(encode(desk, "staff", V, 5, {}))
    assert gap.value.missing == (2, 4)  # the range to ask the desk for
    assert _apply(door, second).seq == 2
