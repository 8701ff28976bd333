"""A GRANTED that the stale-collection gate turned into ERROR STALE_COLLECTION (sync.on_stale =
deny; found in review): the door stays locked, and the person still standing there is granted
as soon as the copy is confirmed fresh again, not held back by the cooldown (or the decided
track) of a GRANTED that was never published nor carried out; while the copy stays stale, the
ERROR is published once per cooldown for that person, not once per decided window."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facelink.device.daemon import Daemon
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.fleet.bodies import face_put
from facelink.fleet.changeset import encode
from facelink.fleet.protocol import Delta, Head, UserPut, encode_head
from facelink.fleet.signing import generate_keypair, load_private
from tests.fleet.test_creeping_hold import challenges
from tests.fleet.test_head_arrival_time import Sent

from .test_partial_steps import ONE_FRAME, _enroll
from .test_pipeline import _frame


def _decisions(daemon) -> list[tuple[str, str | None, str | None]]:
    out = [json.loads(e.payload) for e in daemon.outbox.peek(100)]
    return [(d["decision"], d.get("user_id"), (d.get("reason") or "").split(":")[0] or None)
            for d in out if "decision" in d]


@dataclass
class StaleDoor:
    """The real daemon of a door following a collection (sync.on_stale = deny) that is stale at
    the start, with obama enrolled; frames of obama at the scene's times; the relay's pulses."""

    daemon: Daemon
    faces_dir: Path
    key: Ed25519PrivateKey
    pulses: list[str | None] = field(default_factory=list)

    def frame(self, t: float) -> None:
        f = _frame(self.faces_dir, "obama", int(t))
        self.daemon._frame(type(f)(f.pixels, float(t), f.index))


@pytest.fixture()
def stale_door(tmp_path, faces_dir, engine, make_settings, monkeypatch):
    made: list[Daemon] = []

    def make(matching: dict | None = None, liveness: dict | None = None, **sync: Any) -> StaleDoor:
        generate_keypair(tmp_path / "keys/desk.key", tmp_path / "keys/desk.pub")
        settings = make_settings(camera={"source": str(tmp_path)}, mqtt={"port": 1}, matching=matching or ONE_FRAME,
                                 credentials={"sources": []},  # badge reads: put by the tests
                                 liveness=liveness or {"enabled": False}, sync={"enabled": True, "on_stale": "deny", **sync},
                                 fleet={"trusted_keys": [str(tmp_path / "keys/desk.pub")]})
        with Store(settings.store.database) as store:
            _enroll(Context(store, lambda: engine), faces_dir)
        made.append(Daemon(settings, engine=engine))
        door = StaleDoor(made[-1], faces_dir, load_private(tmp_path / "keys/desk.key"))
        monkeypatch.setattr(door.daemon.clock, "frame", lambda frame: frame.captured_at)  # the scene's time
        real_pulse = door.daemon.relay.pulse
        monkeypatch.setattr(door.daemon.relay, "pulse",
                            lambda user, **kw: (door.pulses.append(user), real_pulse(user, **kw))[1])
        return door

    yield make
    for daemon in made:
        daemon.shutdown(flush_timeout_s=1)


def test_a_grant_the_stale_gate_stopped_does_not_hold_back_the_next(engine, stale_door):
    """obama stands at a door whose copy is stale (never confirmed: no signed head yet), one frame
    a decision, cooldown 30 s. Frames 0-3: one ERROR STALE_COLLECTION, nothing opens. The desk's
    signed head then confirms the copy; frame 4 (obama still there, within the cooldown): GRANTED.
    Before the fix nothing was published for him again: his track kept the GRANTED the gate had
    stopped, and its cooldown held back the next one for 30 s."""
    door = stale_door(challenge_every_s=0)  # heads alone confirm (no challenge to answer)
    follower = door.daemon.sync.follower
    assert follower.stale()
    for t in range(4):  # stale: each frame decides obama again, the gate stops each
        door.frame(t)
    assert _decisions(door.daemon) == [("ERROR", "obama", "STALE_COLLECTION")], \
        "one ERROR per cooldown while stale, no GRANTED"
    assert door.pulses == []
    head = Head(collection_id=follower.collection_id, face_model_version=engine.model_version,  # the desk's
                seq=follower.applied_seq, issued_at=time.time())  # signed head names the seq the door applied
    follower.handle(follower.topics.head, encode_head(door.key, head))
    assert not follower.stale()
    door.frame(4)  # 4 s after the stopped GRANTED: well within cooldown_s (30 s), same person, same spot
    assert _decisions(door.daemon) == [("ERROR", "obama", "STALE_COLLECTION"), ("GRANTED", "obama", None)], \
        "obama is not granted once the copy is fresh: the stopped GRANTED's cooldown holds him back"
    assert door.pulses == ["obama"]


def test_with_the_default_challenge_period_the_person_is_granted_once_the_desk_answers(engine, stale_door):
    """sync.challenge_every_s at its default (3,600 s): a door with no answer to restore (its first
    start on this release) is stale until the desk answers a challenge, though a signed head
    confirmed its copy. obama, at the door meanwhile, gets one ERROR STALE_COLLECTION whose reason
    names that setting (found in review: it said "not confirmed up to date within 300 s" while a
    head had just confirmed the copy, which sent an installer who upgraded the doors first after
    the heads); the desk answers and obama, still there within the cooldown, is granted at once."""
    door = stale_door()
    daemon, follower = door.daemon, door.daemon.sync.follower
    follower.transport = sent = Sent()
    follower.handle(follower.topics.changes, encode(door.key, follower.collection_id, engine.model_version, 1,
                                                    Delta(feed_position=10, users_put=[UserPut(user_id="ann")]
                                                          ).model_dump()))  # the door follows the desk
    daemon._housekeeping(0.0)  # the matcher loads it
    follower.handle(follower.topics.head, encode_head(door.key, Head(
        collection_id=follower.collection_id, face_model_version=engine.model_version, seq=follower.applied_seq,
        issued_at=time.time())))
    follower.tick()
    assert follower.applied_seq and follower.stale() and challenges(sent), "confirmed by the head, asked for an answer, none yet"
    for t in range(3):
        door.frame(t)
    assert _decisions(daemon) == [("ERROR", "obama", "STALE_COLLECTION")] and door.pulses == []
    reason = json.loads(daemon.outbox.peek(1)[0].payload)["reason"]
    assert "sync.challenge_every_s" in reason and "not confirmed up to date" not in reason, reason

    follower.handle(follower.topics.reply(follower.device_id), encode_head(door.key, Head(
        collection_id=follower.collection_id, face_model_version=engine.model_version, seq=follower.applied_seq,
        issued_at=time.time(), nonce=challenges(sent)[-1])))
    assert not follower.stale(), follower.stale_reason()
    door.frame(3)
    assert _decisions(daemon) == [("ERROR", "obama", "STALE_COLLECTION"), ("GRANTED", "obama", None)]
    assert door.pulses == ["obama"]


def test_a_person_at_a_stale_door_gets_one_error_per_cooldown(stale_door):
    """The bound on those ERRORs is the cooldown, not the track: obama stays in view (each frame
    within track_max_age_s of the last) for longer than cooldown_s while the copy stays stale:
    one ERROR STALE_COLLECTION per cooldown_s, nothing granted."""
    door = stale_door({**ONE_FRAME, "cooldown_s": 10.0})
    for t in (0, 3, 6, 9, 11, 14):
        door.frame(t)
    assert _decisions(door.daemon) == [("ERROR", "obama", "STALE_COLLECTION")] * 2  # at 0 and at 11


def test_a_revocation_that_made_the_copy_fresh_is_in_the_matcher_before_anyone_is_granted(engine, stale_door):
    """Found in review: obama (revoked at the desk while this door was offline) waits at the
    stale door; his GRANTED is gated, withdrawn, his track decides again every frame. The door
    comes back: the sync worker applies the change set that deletes him and the head confirms the
    copy (both on its own thread) while the main loop is between its housekeeping (where the
    matcher loads what was applied) and the next frame's gate. That frame was decided on the
    matcher's old copy (obama still in it) and the gate, asked now, says fresh: the door opened
    for a revoked person. A decision the matcher made before it loaded the last change set
    applied is gated as stale; once it has, obama is unknown."""
    door = stale_door(challenge_every_s=0)
    daemon, follower = door.daemon, door.daemon.sync.follower
    for t in range(3):
        door.frame(t)
    obama_faces = [r[0] for r in daemon.store.query("SELECT face_id FROM faces WHERE user_id = 'obama'")]
    seq = follower.applied_seq + 1
    revoke = Delta(feed_position=seq * 10, users_deleted=["obama"], faces_deleted=obama_faces).model_dump()
    follower.handle(follower.topics.changes, encode(door.key, follower.collection_id, engine.model_version, seq, revoke))
    assert follower.applied_seq == seq
    follower.handle(follower.topics.head, encode_head(door.key, Head(
        collection_id=follower.collection_id, face_model_version=engine.model_version, seq=seq,
        issued_at=time.time())))
    assert not follower.stale()

    door.frame(3)  # the worker applied and confirmed after this loop's housekeeping
    assert door.pulses == [], "the door opened for a revoked person: decided on the matcher's old copy"
    assert ("GRANTED", "obama", None) not in _decisions(daemon)

    daemon._housekeeping(4.0)  # the matcher loads the change set
    for t in (4, 5):
        door.frame(t)
    assert door.pulses == [] and ("GRANTED", "obama", None) not in _decisions(daemon)


def test_a_stale_error_the_outbox_refused_does_not_hold_back_the_next(stale_door, monkeypatch):
    """Found in review: the ERROR STALE_COLLECTION the outbox refused (disk full a moment) was
    never recorded, yet its cooldown held back the next one for that person for cooldown_s."""
    door = stale_door()
    daemon = door.daemon
    real_put, refused = daemon.outbox.put, []

    def put(event_id, topic, payload):
        if not refused and payload.get("decision") == "ERROR" and payload.get("user_id") == "obama":
            refused.append(event_id)
            raise OSError("disk full")
        return real_put(event_id, topic, payload)

    monkeypatch.setattr(daemon.outbox, "put", put)
    for t in (0, 1):
        try:
            door.frame(t)
        except OSError:
            assert t == 0
    assert refused
    assert ("ERROR", "obama", "STALE_COLLECTION") in _decisions(daemon), \
        "the refused ERROR's cooldown held back the next one: none recorded"


def _confirm(door: StaleDoor, engine, ahead_s: float = 0.0) -> None:
    """The desk's signed head names the seq the door applied (issued ``ahead_s`` after now)."""
    follower = door.daemon.sync.follower
    follower.handle(follower.topics.head, encode_head(door.key, Head(
        collection_id=follower.collection_id, face_model_version=engine.model_version, seq=follower.applied_seq,
        issued_at=time.time() + ahead_s)))
    assert not follower.stale(), follower.stale_reason()


def _expire(door: StaleDoor) -> float:
    """The door's monotonic clock moves past max_staleness_s: the copy is stale (no head since)."""
    follower, real = door.daemon.sync.follower, door.daemon.sync.follower.monotonic
    step = follower.max_staleness_s + 1.0
    follower.monotonic = lambda: real() + step
    assert follower.stale()
    return step


def test_a_card_grant_the_stale_gate_stopped_keeps_the_earlier_grants_cooldown(engine, stale_door):
    """card_or_face (found in review): obama is GRANTED by his face at a fresh door and it opens.
    The copy goes stale; he taps his badge: that card GRANTED is gated (ERROR STALE_COLLECTION)
    and withdrawn. The copy is confirmed again and his face is decided again on a new track, well
    within cooldown_s of the GRANTED the door published: nothing more is published nor opened.
    Before the fix, withdrawing the card GRANTED dropped the cooldown it had taken over from the
    face GRANTED (the policy kept one cooldown per person, the newest), so the door published a
    second GRANTED and opened again for him within cooldown_s."""
    from facelink.enroll import credentials

    door = stale_door({**ONE_FRAME, "mode": "card_or_face"}, challenge_every_s=0)
    daemon = door.daemon
    with Store(daemon.settings.store.database) as store:
        credentials.put_user_credential(Context(store, lambda: engine), "door", "obama", "H10301:18:1001")
    _confirm(door, engine)
    door.frame(0)
    assert _decisions(daemon) == [("GRANTED", "obama", None)] and door.pulses == ["obama"]

    ahead = _expire(door)
    assert daemon.badges.put("H10301:18:1001", "serial")
    daemon._badges(1.0)  # his tap, while the copy is stale
    assert _decisions(daemon)[1:] == [("ERROR", "obama", "STALE_COLLECTION")]
    _confirm(door, engine, ahead)  # the desk is heard again
    door.frame(7)  # a new track (the first aged out after 5 s), 7 s after his GRANTED (cooldown_s 30)
    assert _decisions(daemon) == [("GRANTED", "obama", None), ("ERROR", "obama", "STALE_COLLECTION")], \
        "a second GRANTED within cooldown_s: the gated card GRANTED's withdrawal dropped the first's cooldown"
    assert door.pulses == ["obama"]


def _change(door: StaleDoor, engine, body) -> int:
    """The desk's next change set, applied by the door's follower (as its worker would)."""
    follower = door.daemon.sync.follower
    seq = follower.applied_seq + 1
    follower.handle(follower.topics.changes, encode(door.key, follower.collection_id, engine.model_version, seq,
                                                    body.model_dump()))
    assert follower.applied_seq == seq
    return seq


def test_a_denial_the_stale_gate_stopped_is_decided_again_once_the_copy_is_fresh(engine, stale_door):
    """Found in review: a DENIED the gate stopped kept its track decided, unlike a GRANTED. obama
    was removed at the desk and enrolled again while this door was cut off: its copy has the
    removal, not the new enrollment, and is stale. He stands at the door: his DENIED_UNKNOWN is
    ERROR STALE_COLLECTION (published once, not once per window: the ERROR names nobody whose
    cooldown could bound it). The door hears the desk again: the enrollment is applied and
    confirmed, and obama, still there, is decided again on the fresh copy: GRANTED. Before the
    fix nothing more was decided for him until he stepped away (his track kept the DENIED that
    nobody saw)."""
    door = stale_door(challenge_every_s=0)
    daemon = door.daemon
    rows = [r for r in daemon.store.collection_faces("door") if r.user_id == "obama"]
    _change(door, engine, Delta(feed_position=10, users_deleted=["obama"], faces_deleted=[r.face_id for r in rows]))
    daemon._housekeeping(0.0)  # the matcher loads it; nothing confirms the copy: stale
    for t in range(4):
        door.frame(t)
    assert _decisions(daemon) == [("ERROR", None, "STALE_COLLECTION")] and door.pulses == []
    assert "would have been DENIED_UNKNOWN" in json.loads(daemon.outbox.peek(1)[0].payload)["reason"]

    _change(door, engine, Delta(feed_position=20, users_put=[UserPut(user_id="obama")],
                                faces_put=[face_put(r) for r in rows]))
    _confirm(door, engine)
    daemon._housekeeping(4.0)  # the matcher loads the enrollment
    for t in (4, 5):  # obama still there, same spot
        door.frame(t)
    assert _decisions(daemon) == [("ERROR", None, "STALE_COLLECTION"), ("GRANTED", "obama", None)], \
        "obama is not decided again once the copy is fresh: his track kept the DENIED the gate stopped"
    assert door.pulses == ["obama"]


def _revocation(door: StaleDoor, user: str, feed_position: int) -> Delta:
    """The desk's change set that deletes ``user`` (and their faces)."""
    rows = [r for r in door.daemon.store.collection_faces("door") if r.user_id == user]
    return Delta(feed_position=feed_position, users_deleted=[user], faces_deleted=[r.face_id for r in rows])


def _applied_after_housekeeping(stale_door, engine, matching: dict | None = None, revoked: str | None = None,
                                **sync: Any) -> StaleDoor:
    """A fresh door whose sync worker applied and confirmed a change set (ann enrolled: it does not
    concern obama; or ``revoked`` deleted) after the main loop's housekeeping: the matcher still
    holds the copy before it."""
    door = stale_door(matching, challenge_every_s=0, **sync)
    _confirm(door, engine)
    door.daemon._housekeeping(0.0)
    _change(door, engine, _revocation(door, revoked, 10) if revoked else
            Delta(feed_position=10, users_put=[UserPut(user_id="ann")]))
    _confirm(door, engine)  # the worker applied and confirmed after this loop's housekeeping
    return door


def test_a_decision_made_before_the_matcher_loaded_a_change_set_is_made_again_not_an_error(engine, stale_door):
    """Found in review: at a fresh door, the sync worker applies a change set (ann enrolled: it
    does not concern obama) and the head confirms it between the main loop's housekeeping and
    the next frame. obama's GRANTED that frame was made on the matcher's copy before it: not
    granted (a revocation in that set must not grant on the old copy), and not an ERROR
    STALE_COLLECTION either (the door is healthy: an operator saw stale errors at a fresh door).
    It is made again: the next housekeeping loads the set and the next frame grants obama."""
    door = _applied_after_housekeeping(stale_door, engine)
    daemon = door.daemon

    door.frame(0)  # obama decided on the matcher's old copy
    assert door.pulses == [] and _decisions(daemon) == [], \
        "a decision made before the matcher loaded the change set was published"
    daemon._housekeeping(1.0)  # the matcher loads it
    door.frame(1)
    assert _decisions(daemon) == [("GRANTED", "obama", None)] and door.pulses == ["obama"]


def test_a_stale_error_for_a_denial_the_outbox_refused_is_made_again_while_stale(engine, stale_door, monkeypatch):
    """Found in review: an unknown face at a stale door; its DENIED_UNKNOWN is gated (ERROR
    STALE_COLLECTION) and its track held decided until the copy is fresh (one ERROR per track).
    The outbox refused that ERROR (disk full a moment): nothing was recorded for the person, yet
    the track stayed held, so while the copy stayed stale nothing more was ever published for them
    (unlike a refused GRANTED's ERROR, whose track starts again). A refused ERROR releases the
    track: the next frames decide again and its ERROR is recorded."""
    door = stale_door(challenge_every_s=0)
    daemon = door.daemon
    rows = [r for r in daemon.store.collection_faces("door") if r.user_id == "obama"]
    _change(door, engine, Delta(feed_position=10, users_deleted=["obama"], faces_deleted=[r.face_id for r in rows]))
    daemon._housekeeping(0.0)  # the matcher loads it; nothing confirms the copy: stale
    assert daemon.sync.follower.stale()
    real_put, refused = daemon.outbox.put, []

    def put(event_id, topic, payload):
        if not refused and payload.get("decision") == "ERROR" and "STALE_COLLECTION" in (payload.get("reason") or ""):
            refused.append(event_id)
            raise OSError("disk full")
        return real_put(event_id, topic, payload)

    monkeypatch.setattr(daemon.outbox, "put", put)
    with pytest.raises(OSError):
        door.frame(0)
    assert refused and _decisions(daemon) == []
    for t in (1, 2, 3):  # the same unknown face, still there; the copy still stale
        daemon._housekeeping(float(t))
        door.frame(t)
    assert ("ERROR", None, "STALE_COLLECTION") in _decisions(daemon), \
        "the refused ERROR's held track kept anything more from being published while stale"


def test_a_decision_not_made_again_because_the_face_left_is_recorded(engine, stale_door):
    """Found in review: a face's decision made after the sync worker applied a change set but
    before the matcher loaded it is not published but made again by the next frames. If there are
    none for that face (the person walked on: an unknown face passing, someone who gave up), the
    decision was lost: nothing at all was recorded that they were at the door (before 2026-12-07
    it was an ERROR). Once their track is gone without a decision made again, the decision is
    recorded as ERROR (saying what it would have been); the door stays locked."""
    import numpy as np

    from facelink.device.camera import Frame

    door = _applied_after_housekeeping(stale_door, engine)
    daemon = door.daemon
    door.frame(0)  # obama decided on the matcher's old copy: not published, to be made again
    assert _decisions(daemon) == [] and door.pulses == []
    empty = np.zeros((480, 640, 3), np.uint8)
    for t in range(1, 8):  # obama has walked on: no face, his track ages out (track_max_age_s 5 s)
        daemon._housekeeping(float(t))
        daemon._frame(Frame(empty, float(t), t))
    decided = [json.loads(e.payload) for e in daemon.outbox.peek(10)]
    assert [(d["decision"], d.get("user_id")) for d in decided] == [("ERROR", "obama")], \
        "the decision that was to be made again was lost: nothing recorded for obama"
    assert "would have been GRANTED" in decided[0]["reason"], decided[0]["reason"]
    assert door.pulses == []


def test_a_decision_kept_to_be_made_again_is_recorded_when_the_door_stops(engine, stale_door, monkeypatch):
    """Found in review: obama's decision, made before the matcher loaded a change set, is kept to be
    made again; the daemon stops (SIGTERM) before his next frame. The kept decision vanished:
    nothing on record that he stood at the door. It is published as ERROR (saying what it would have
    been) before the outbox drains, and stays in the outbox for the next start."""
    from facelink.mqtt.outbox import Outbox

    door = _applied_after_housekeeping(stale_door, engine)
    daemon = door.daemon
    door.frame(0)  # obama decided on the matcher's old copy: kept to be made again
    assert _decisions(daemon) == []
    real_close, at_drain = daemon.pump.close, []

    def close(flush_timeout_s: float) -> int:
        at_drain.append([json.loads(e.payload) for e in daemon.outbox.peek(100)])
        return real_close(flush_timeout_s)

    monkeypatch.setattr(daemon.pump, "close", close)
    daemon.shutdown(flush_timeout_s=0)
    monkeypatch.setattr(daemon.pump, "close", real_close)  # the fixture's teardown stops it again
    assert [[(d["decision"], d.get("user_id")) for d in drained] for drained in at_drain] == [[("ERROR", "obama")]], \
        "the decision kept to be made again was lost when the door stopped"
    reason = at_drain[0][0]["reason"]
    assert "the door stopped" in reason and "would have been GRANTED" in reason, reason
    outbox = Outbox(daemon.settings.mqtt.outbox)  # what the next start sends
    try:
        assert [json.loads(e.payload)["event_id"] for e in outbox.peek(100)] == [at_drain[0][0]["event_id"]]
    finally:
        outbox.close()
    assert door.pulses == []


def test_with_on_stale_keep_a_revocation_applied_but_not_loaded_grants_nobody(engine, stale_door):
    """Found in review: sync.on_stale = keep is a site's choice to keep deciding on a copy not
    confirmed up to date, not to decide on a copy older than the one applied. At a fresh door, the
    sync worker applies (and the head confirms) obama's revocation between the main loop's
    housekeeping and the next frame: that frame decides obama on the matcher's old copy, and with
    keep nothing gated it: the door opened for a revoked person. The gap is gated whatever
    on_stale says: the decision is made again on the loaded copy, where obama is unknown."""
    door = _applied_after_housekeeping(stale_door, engine, revoked="obama", on_stale="keep")
    daemon = door.daemon
    door.frame(0)  # decided on the matcher's old copy (obama still in it)
    assert door.pulses == [] and _decisions(daemon) == [], "a revoked person was granted on the old copy"
    daemon._housekeeping(1.0)  # the matcher loads the revocation
    door.frame(1)
    assert _decisions(daemon) == [("DENIED_UNKNOWN", None, None)] and door.pulses == []


def test_a_badge_read_after_a_change_set_was_applied_is_answered_not_an_error(engine, stale_door, monkeypatch):
    """Found in review: at a fresh door (card_or_face), the sync worker applies and confirms a
    change set (ann enrolled) after the main loop's housekeeping; obama taps his badge. His card
    GRANTED was ERROR STALE_COLLECTION (the matcher had not loaded the set) and he had to tap
    again, though a badge is looked up in the database, which had the set. It is GRANTED. Where a
    set is applied while the badge step runs (his revocation, after his lookup), the read may have
    come before it: still ERROR, nothing opens; once loaded, his badge is unknown."""
    from facelink.enroll import credentials

    door = _applied_after_housekeeping(stale_door, engine, {**ONE_FRAME, "mode": "card_or_face"})
    daemon = door.daemon
    with Store(daemon.settings.store.database) as store:
        credentials.put_user_credential(Context(store, lambda: engine), "door", "obama", "H10301:18:1001")
    assert daemon.badges.put("H10301:18:1001", "serial")
    daemon._badges(1.0)
    assert _decisions(daemon) == [("GRANTED", "obama", None)], "the tap at a fresh door was answered with an ERROR"
    assert door.pulses == ["obama"]

    real_holder = daemon.store.user_by_credential

    def holder(collection_id: str, credential: str) -> str | None:
        user = real_holder(collection_id, credential)
        if user == "obama":  # the worker applies (and the head confirms) his revocation right after
            _change(door, engine, _revocation(door, "obama", 20))
            _confirm(door, engine)
        return user

    monkeypatch.setattr(daemon.store, "user_by_credential", holder)
    assert daemon.badges.put("H10301:18:1001", "serial")
    daemon._badges(2.0)
    assert _decisions(daemon)[1:] == [("ERROR", "obama", "STALE_COLLECTION")] and door.pulses == ["obama"]
    monkeypatch.setattr(daemon.store, "user_by_credential", real_holder)
    daemon._housekeeping(3.0)  # the matcher loads the revocation; the tap after it
    assert daemon.badges.put("H10301:18:1001", "serial")
    daemon._badges(3.0)
    assert _decisions(daemon)[2:] == [("DENIED_UNKNOWN_CARD", None, "badge H10301")] and door.pulses == ["obama"]


def test_a_decision_whose_track_cannot_start_again_is_recorded(engine, stale_door, monkeypatch):
    """Found in review: obama's decision, made before the matcher loaded a change set, is to be made
    again, but his track cannot start again (the tracker fails): it was neither published nor kept,
    and nothing was on record that he stood at the door. It is published as ERROR (saying what it
    would have been); the door stays locked."""
    door = _applied_after_housekeeping(stale_door, engine)
    daemon = door.daemon

    def restart(track) -> None:
        raise RuntimeError("tracker broken")

    monkeypatch.setattr(daemon.pipeline.components.tracker, "restart", restart)
    door.frame(0)
    assert _decisions(daemon) == [("ERROR", "obama", "not made again")], "the decision to be made again was lost"
    assert "would have been GRANTED" in json.loads(daemon.outbox.peek(1)[0].payload)["reason"]
    assert door.pulses == []


CARD = "H10301:18:1001"


def _card_and_face_gap(stale_door, engine, **matching: Any) -> StaleDoor:
    """card_and_face at a fresh door, confirmed up to date, obama's badge enrolled."""
    from facelink.enroll import credentials

    door = stale_door({**ONE_FRAME, "mode": "card_and_face", "card_window_s": 10.0, **matching}, challenge_every_s=0)
    with Store(door.daemon.settings.store.database) as store:
        credentials.put_user_credential(Context(store, lambda: engine), "door", "obama", CARD)
    door.daemon.clock.now = lambda: 0.0  # the badge step's time: the scene's start
    _confirm(door, engine)
    door.daemon._housekeeping(0.0)
    return door


def _gap(door: StaleDoor, engine, revoked: str | None = None) -> None:
    """The sync worker applies (and the head confirms) a change set (ann enrolled, or ``revoked``
    deleted) after the main loop's housekeeping: the matcher still holds the copy before it."""
    _change(door, engine, _revocation(door, revoked, 10) if revoked else
            Delta(feed_position=10, users_put=[UserPut(user_id="ann")]))
    _confirm(door, engine)


def _stopping(daemon) -> None:
    """What the daemon publishes as it stops, before its outbox drains (:meth:`Daemon.shutdown`)."""
    daemon._publish_kept()
    daemon._close_verifications("the door stopped")


def test_a_low_quality_denial_in_the_gap_is_published_at_once(engine, stale_door):
    """card_and_face: obama's face (too small for the door: DENIED_LOW_QUALITY) is decided on the
    matcher's copy before a change set the worker applied. The quality gate refused every frame
    before any match: no copy decides it otherwise, so it is published at once, not kept to be
    made again (until review 96 it was kept, and a tap carried it over to the restarted track).
    He taps: the new verification restarts the tracks in view and his face, still too small, is
    DENIED_LOW_QUALITY again, as at a door without the gap (a tap is a presentation of its own)."""
    door = _card_and_face_gap(stale_door, engine, min_face_px=4000)
    daemon = door.daemon
    _gap(door, engine)
    door.frame(0)  # DENIED_LOW_QUALITY on the old copy: published as made
    assert _decisions(daemon) == [("DENIED_LOW_QUALITY", None, "SMALL_BOUNDING_BOX")]
    assert daemon.pipeline.stale._remade == {}
    assert daemon.badges.put(CARD, "serial")
    daemon._housekeeping(1.0)  # the matcher loads the change set, then the tap: a verification, tracks restarted
    assert daemon.pipeline.factors.claim is not None
    door.frame(1)  # obama still there, same spot
    assert _decisions(daemon) == [("DENIED_LOW_QUALITY", None, "SMALL_BOUNDING_BOX")] * 2
    assert daemon.pipeline.stale._remade == {} and door.pulses == []


def test_a_card_and_face_verdict_before_the_matcher_loaded_a_change_set_is_made_again(engine, stale_door):
    """card_and_face: obama taps; the worker applies a change set (ann enrolled) after the
    housekeeping; his face then matches on the matcher's old copy. Before the fix that verdict was
    ERROR STALE_COLLECTION at a healthy door (the verification it closed could not be reopened) and
    he had to tap again. Now it is not published: the verification opens again and the next frames,
    on the loaded copy, grant him. One record, one pulse."""
    door = _card_and_face_gap(stale_door, engine)
    daemon = door.daemon
    assert daemon.badges.put(CARD, "serial")
    daemon._badges(0.0)
    _gap(door, engine)
    door.frame(0)  # GRANTED on the old copy: made again
    assert _decisions(daemon) == [] and door.pulses == [], "the verdict in the gap was published"
    assert daemon.pipeline.factors.claim is not None, "the verification it closed is not open again"
    daemon._housekeeping(1.0)  # the matcher loads it
    door.frame(1)
    assert _decisions(daemon) == [("GRANTED", "obama", None)] and door.pulses == ["obama"]
    assert daemon.pipeline.factors.claim is None
    door.frame(2)
    _stopping(daemon)
    assert _decisions(daemon) == [("GRANTED", "obama", None)], "one presentation, one record"


def test_a_card_and_face_verdict_in_the_gap_grants_no_one_the_change_set_revoked(engine, stale_door, monkeypatch):
    """As above, but the change set the worker applies while obama's frame is matched (after its
    tick looked his badge up) revokes him (his user, faces and badge): the verdict on the old copy
    is not granted, and the verification opened again closes as his badge's revocation
    (DENIED_UNKNOWN_CARD) at the next tick: one record, nothing opens."""
    door = _card_and_face_gap(stale_door, engine)
    daemon = door.daemon
    assert daemon.badges.put(CARD, "serial")
    daemon._badges(0.0)
    real_best, revoked = daemon.index.best_of_user, []

    def best_of_user(user_id, embedding):
        match = real_best(user_id, embedding)
        if not revoked:  # the worker applies his revocation right after this lookup
            revoked.append(_gap(door, engine, revoked="obama"))
        return match

    monkeypatch.setattr(daemon.index, "best_of_user", best_of_user)
    door.frame(0)
    assert revoked and door.pulses == [] and _decisions(daemon) == [], "a revoked holder's verdict was published"
    daemon._housekeeping(1.0)
    for t in (1, 2):
        door.frame(t)
    _stopping(daemon)
    assert [d[0] for d in _decisions(daemon)] == ["DENIED_UNKNOWN_CARD"] and door.pulses == []


def test_a_card_and_face_verdict_kept_then_the_face_left_is_one_error(engine, stale_door):
    """The verdict made in the gap is kept and its verification opened again; obama walks on
    before his face is seen again: one ERROR (would have been GRANTED), and the verification it
    stood for is closed with it (no DENIED_NO_FACE after it for the same tap), nothing opens."""
    import numpy as np

    from facelink.device.camera import Frame

    door = _card_and_face_gap(stale_door, engine)
    daemon = door.daemon
    assert daemon.badges.put(CARD, "serial")
    daemon._badges(0.0)
    _gap(door, engine)
    door.frame(0)
    empty = np.zeros((480, 640, 3), np.uint8)
    for t in range(1, 15):  # past the track's max age and the badge's window
        daemon._housekeeping(float(t))
        daemon._frame(Frame(empty, float(t), t))
    _stopping(daemon)
    decided = [json.loads(e.payload) for e in daemon.outbox.peek(10)]
    assert [(d["decision"], d.get("user_id")) for d in decided] == [("ERROR", "obama")], decided
    assert "would have been GRANTED" in decided[0]["reason"] and door.pulses == []


def test_a_tap_does_not_let_its_verdict_stand_for_a_decision_from_before_it(engine, stale_door):
    """card_and_face: obama's face (too small: DENIED_LOW_QUALITY) is decided on the matcher's old
    copy; then he taps and, his face now usable, the new verification grants him. At a door without
    the gap that is two records (the face-only decision before the tap, then the verification's
    verdict): the tap starts a presentation of its own. Found in review: the kept decision followed
    his restarted track and the verdict of the verification stood for it (no record of the decision
    before the tap); then it was published as ERROR "a badge was read"; since review 96 a
    DENIED_LOW_QUALITY (or DENIED_SPOOF) in the gap is published as made."""
    door = _card_and_face_gap(stale_door, engine, min_face_px=4000)
    daemon = door.daemon
    _gap(door, engine)
    door.frame(0)  # DENIED_LOW_QUALITY on the old copy: published as made
    assert daemon.badges.put(CARD, "serial")
    daemon._housekeeping(1.0)  # the matcher loads the change set, then the tap
    from dataclasses import replace

    c = daemon.pipeline.components
    daemon.pipeline.components = replace(c, gate=replace(c.gate, min_face_px=0))  # his face is usable now
    door.frame(1)
    _stopping(daemon)
    assert _decisions(daemon) == [("DENIED_LOW_QUALITY", None, "SMALL_BOUNDING_BOX"), ("GRANTED", "obama", None)]
    assert door.pulses == ["obama"] and daemon.pipeline.stale._remade == {}

LIVENESS = {"enabled": True, "frozen_feed": True}  # FROZEN_FEED: a still is DENIED_SPOOF at its 4th frame


def _still(door: StaleDoor):
    """obama's photo as a frozen feed: the same pixels every frame (an injected still)."""
    from facelink.device.camera import Frame

    still = _frame(door.faces_dir, "obama", 0)
    return lambda t: door.daemon._frame(Frame(still.pixels, float(t), t))


def test_a_spoof_denial_in_the_gap_is_published_at_once_not_made_again(engine, stale_door):
    """Found in review: a DENIED_SPOOF (liveness refused the presentation: here a frozen feed of
    obama's photo) made after the sync worker applied a change set, before the matcher loaded it,
    was kept and made again like a decision that depends on the copy: its cooldown withdrawn, its
    track restarted, so the attacker got a fresh liveness attempt, and the spoof record was dropped
    if that attempt decided otherwise. Liveness does not depend on the copy (a DENIED_SPOOF names
    nobody, and no copy turns a refused presentation into a grant): it is published at once, its
    track stays decided and its cooldown runs."""
    door = stale_door(ONE_FRAME, LIVENESS, challenge_every_s=0)
    daemon = door.daemon
    _confirm(door, engine)
    daemon._housekeeping(0.0)
    show = _still(door)
    for t in range(3):  # not yet compared enough to call it
        show(t)
    assert _decisions(daemon) == []
    _gap(door, engine)
    show(3)  # DENIED_SPOOF, on the matcher's copy before the change set
    assert _decisions(daemon) == [("DENIED_SPOOF", None, "FROZEN_FEED")], \
        "the spoof denial in the gap was kept to be made again: a fresh liveness attempt"
    c = daemon.pipeline.components
    (track,) = c.tracker.tracks()
    assert track.decided == "DENIED_SPOOF" and daemon.pipeline.stale._remade == {}
    assert c.policy._cooling(f"DENIED_SPOOF:{track.track_id}", 3.0), "its cooldown was withdrawn"
    daemon._housekeeping(4.0)  # the matcher loads the change set
    for t in range(4, 10):
        show(t)
    _stopping(daemon)
    assert _decisions(daemon) == [("DENIED_SPOOF", None, "FROZEN_FEED")] and door.pulses == []


def test_a_spoof_denial_at_a_stale_door_is_published_as_made(stale_door):
    """sync.on_stale = deny turns a decision that depends on the copy into ERROR STALE_COLLECTION;
    a DENIED_SPOOF does not (found in review: it was that ERROR, its cooldown withdrawn and its
    track held, then decided again once the copy was fresh: a fresh liveness attempt)."""
    door = stale_door(ONE_FRAME, LIVENESS)
    assert door.daemon.sync.follower.stale()
    show = _still(door)
    for t in range(8):
        show(t)
    assert _decisions(door.daemon) == [("DENIED_SPOOF", None, "FROZEN_FEED")] and door.pulses == []
    assert door.daemon.pipeline.stale._held == set()


def _two_faces(door: StaleDoor):
    """obama (the badge holder) at the door and biden beside him, smaller: one frame of both."""
    import cv2
    import numpy as np

    from facelink.device.camera import Frame

    canvas = np.full((480, 640, 3), 90, np.uint8)
    for name, (y, x, w, h) in (("obama", (60, 140, 288, 360)), ("biden", (120, 460, 168, 210))):
        photo = cv2.imread(str(door.faces_dir / "people" / name / "1.jpg"))
        canvas[y:y + h, x:x + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)

    def show(t: int) -> None:
        noise = np.random.default_rng(t).normal(0, 2, canvas.shape)
        door.daemon._frame(Frame(np.clip(canvas + noise, 0, 255).astype(np.uint8), float(t), t))
    return show


def test_a_verification_opened_again_restarts_the_other_undecided_tracks(engine, stale_door):
    """card_and_face, two of two frames: obama taps, biden stands beside him (not the holder:
    a wrong face for this verification). Frame 0: obama matches, biden is a wrong face. The sync
    worker applies a change set; frame 1: obama's verdict (GRANTED) is made on the matcher's old
    copy: not published, the verification opens again and his track starts again. Found in review:
    biden's track kept its wrong-face frame from the first window, so the next frame closed the
    reopened verification DENIED_WRONG_FACE before obama's restarted track could decide: obama,
    standing there, was refused. A reopen restarts every undecided track in view, as the tap did."""
    door = _card_and_face_gap(stale_door, engine, frames_required=2, frames_window=3, min_face_px=40)
    daemon = door.daemon
    show = _two_faces(door)
    assert daemon.badges.put(CARD, "serial")
    daemon._badges(0.0)
    show(0)
    assert len(daemon.pipeline.components.tracker.tracks()) == 2
    _gap(door, engine)
    show(1)  # obama's GRANTED on the old copy: made again
    assert _decisions(daemon) == [] and daemon.pipeline.factors.claim is not None
    daemon._housekeeping(2.0)  # the matcher loads it
    for t in (2, 3):
        show(t)
    _stopping(daemon)
    assert _decisions(daemon) == [("GRANTED", "obama", None)], \
        "a wrong face seen before the reopen closed obama's verification first"
    assert door.pulses == ["obama"]


def test_a_spoof_denial_in_the_gap_of_a_revoked_face_is_the_spoof(engine, stale_door):
    """Review 99: a DENIED_SPOOF is not independent of the copy -- only a frame that matched on it
    counts as a spoof. obama's frozen photo, obama revoked by the change set in the gap: the old copy
    matched him, so the presentation is DENIED_SPOOF, published as made (it opens nothing; making it
    again was a fresh liveness attempt), where the loaded copy says DENIED_UNKNOWN. Nobody is granted
    either way, and nothing more is published for the track once the copy is loaded."""
    door = stale_door(ONE_FRAME, LIVENESS, challenge_every_s=0)
    daemon = door.daemon
    _confirm(door, engine)
    daemon._housekeeping(0.0)
    show = _still(door)
    for t in range(3):
        show(t)
    _gap(door, engine, revoked="obama")
    show(3)  # the old copy: obama, a still
    assert _decisions(daemon) == [("DENIED_SPOOF", None, "FROZEN_FEED")]
    daemon._housekeeping(4.0)  # the matcher loads the revocation
    for t in range(4, 12):
        show(t)
    _stopping(daemon)
    assert _decisions(daemon) == [("DENIED_SPOOF", None, "FROZEN_FEED")] and door.pulses == []


def test_a_photo_of_a_revoked_face_on_the_loaded_copy_is_unknown(engine, stale_door):
    """The same still once the matcher holds the revocation: no frame matches, so no frame counts as
    a spoof -- DENIED_UNKNOWN (what the README says a DENIED_SPOOF in the gap stands for)."""
    door = stale_door(ONE_FRAME, LIVENESS, challenge_every_s=0)
    daemon = door.daemon
    _confirm(door, engine)
    daemon._housekeeping(0.0)
    _gap(door, engine, revoked="obama")
    daemon._housekeeping(0.5)
    show = _still(door)
    for t in range(12):
        show(t)
    _stopping(daemon)
    assert _decisions(daemon) == [("DENIED_UNKNOWN", None, None)] and door.pulses == []
