"""Review 97: an accepted restore hold of a collection the desk's store does not hold (yet) -- the
desk database went back to a backup from before the collection was created, and the operator
accepts the hold before creating it again. The hold used to be dropped from memory at the next
step (``_journal_past``: "nothing to publish until the collection exists"), so once the
collection was created in the same run the desk journaled and published its first change sets
at seqs 1, 2, ... -- inside the lost range, seqs the doors hold with other content -- and heads
naming them (a head naming a lost seq confirms a door's copy of the lost history). A desk started
again in between reloaded the hold and journaled past the lost range first: the same database
behaved two ways. Now the accepted hold is kept until the journal is past it, whether or not the
desk restarted. Real parts: the desk's Publisher and journal on a real desk database, a real
mosquitto (retained head, listener)."""

from __future__ import annotations

import json
import logging

import pytest

from facelink.enroll.store import Store
from facelink.fleet.status import _desk_heads, _restore_report

from .conftest import V, add_faces
from .test_restore_journaled_in_batches import EVIDENCE, LAB, STAFF, Desk, retain_evidence_head
from .test_status_reads_only import _settings


def _payload(message: bytes) -> dict:
    return json.loads(json.loads(message)["payload"])


@pytest.mark.parametrize("restart", [None, "before", "after"])
def test_accepted_restore_of_an_absent_collection_is_kept_until_it_is_created(broker, listeners, desk_db, keys,
                                                                             restart, caplog):
    with Store(desk_db) as s:  # the backup predates "staff": only "lab" is in the store
        s.insert_collection("lab", V)
        s.insert_user("lab", "ann")
        add_faces(s, "lab", 1, "ann")
    retain_evidence_head(broker.port, keys[0], "rv97-setup")
    inbox = listeners([STAFF.changes, STAFF.head, LAB.changes, LAB.head], "rv97-door")
    desk = Desk(desk_db, keys[0], broker.port)
    try:
        desk.step(inbox)
        assert desk.publisher.held()["staff"].lost == (1, EVIDENCE)
        desk.journal.accept_restore("staff")  # before the collection is created again
        for _ in range(3):  # accepted; nothing to journal past yet: the hold is kept, nothing goes out
            desk.step(inbox)
        assert desk.journal.last("staff") is None and inbox.on(STAFF.changes) == []
        assert [_payload(m)["seq"] for m in inbox.on(STAFF.head)] == [EVIDENCE]
        assert not desk.publisher.held() and "staff" in desk.publisher._restores  # accepted, kept
        waiting = [r for r in caplog.records if "not in the desk's database" in r.getMessage()]
        assert len(waiting) == 1 and "seq 8" in waiting[0].getMessage()  # once a minute, not each step
        assert not [r for r in caplog.records if r.levelno == logging.ERROR]  # was an AttributeError each step
        # `facelink fleet status` says what the desk waits for (review 99: it said "the running desk
        # journals past the lost seqs and publishes again" while it waited for the collection)
        restores: list = []
        absent: set = set()
        _desk_heads(_settings(desk_db), restores, absent)
        report = {r.collection_id: _restore_report(r, r.collection_id in absent) for r in restores}["staff"]
        assert report["State"] == "ACCEPTED" and report["LostSeqs"] == [1, EVIDENCE]
        assert "not in the desk's database" in report["Action"] and "publishes again" not in report["Action"]
        if restart == "before":  # started again before the collection is created: the same
            desk.close()
            desk = Desk(desk_db, keys[0], broker.port)
            desk.step(inbox)
        if restart == "after":
            desk.close()
        with Store(desk_db) as s:  # the operator re-does the lost history: the collection first
            s.insert_collection("staff", V)
            s.insert_user("staff", "bob")
            add_faces(s, "staff", 1, "bob")
        if restart == "after":  # a desk started with the collection there reloads the hold (passed before)
            desk = Desk(desk_db, keys[0], broker.port)
        steps = 0
        while desk.journal.published_seq("staff") == 0:
            assert inbox.on(STAFF.changes) == [], "published before the journal was past the lost seqs"
            desk.step(inbox)
            steps += 1
            assert steps <= 4
        assert steps == 3  # the rebase and 2..4, then 5..7, then 8 (the evidence seq + 1) and everything published
        sent = [_payload(m) for m in inbox.on(STAFF.changes)]
        assert [p["seq"] for p in sent] == list(range(1, EVIDENCE + 2))
        assert [p["body"]["kind"] for p in sent] == ["rebase"] + ["delta"] * EVIDENCE
        heads = [_payload(m)["seq"] for m in inbox.on(STAFF.head)]
        assert heads[0] == EVIDENCE and all(h > EVIDENCE for h in heads[1:]) and len(heads) > 1
        assert desk.publisher.held() == {} and "staff" not in desk.publisher._restores
        restores = []
        _desk_heads(_settings(desk_db), restores, absent)
        assert restores == []
        with Store(desk_db) as s:  # then the collection goes on as any other
            s.insert_user("staff", "cy")
        desk.step(inbox)
        assert [_payload(m)["seq"] for m in inbox.on(STAFF.changes)][-1] == EVIDENCE + 2
    finally:
        desk.close()
