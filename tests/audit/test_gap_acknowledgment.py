"""``facelink-logger acknowledge``: a security manager signs off numbers found missing (or given to
two events) after investigating them. Before, ``sequence_reused`` was never cleared and a gap
confirmed lost could never be signed off, so ``gaps`` exited 1 for ever after an outbox restore or
a full outbox's drops, and the nightly alarm became noise. A sign-off is appended (who, when, why,
which numbers), hides nothing new (a number lost or given twice later counts again) and names only
numbers missing (or reused) now. Real audit database, real outbox events through the intake, the
logger's command line."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading

import pytest

from facelink.audit.intake import Intake
from facelink.audit.logger import main as logger_main
from facelink.audit.store import AuditLog
from facelink.mqtt.outbox import Outbox
from tests.audit.test_event_gaps import _put

EX_DATAERR = 65  # acknowledge refused (README: Audit log)
EX_TEMPFAIL = 75  # acknowledge not recorded: the database busy
ACK_RANGES_MAX = 1000  # ranges in one acknowledge (README: Audit log)
BY = "j.smith (security manager)"
WHY = "INC-2291: outbox full while the door was offline 2026-12-01 (health outbox_dropped 2)"


def _cli(db, *args: str, capsys) -> tuple[int, list[dict], str]:
    rc = logger_main(["--db", str(db), *args])
    said = capsys.readouterr()
    return rc, [json.loads(line) for line in said.out.splitlines()], said.err


def _deliver(tmp_path, users: list[str], lost: set[int]) -> tuple[Outbox, str]:
    """The door records ``users`` (numbered 1, 2, …); all but the numbers in ``lost`` reach the
    log through the intake. The outbox is returned open, to record more."""
    outbox = Outbox(tmp_path / "outbox.db")
    _put(outbox, *users)
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    for e in outbox.peek(100):
        if json.loads(e.payload)["event_seq"] not in lost:
            intake.handle(e.topic, e.payload.encode())
    audit.close()
    return outbox, outbox.stream


def _more(tmp_path, outbox: Outbox, users: list[str], lost: set[int]) -> None:
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    before = {json.loads(e.payload)["event_id"] for e in outbox.peek(100)}
    _put(outbox, *users)
    for e in outbox.peek(100):
        payload = json.loads(e.payload)
        if payload["event_id"] not in before and payload["event_seq"] not in lost:
            intake.handle(e.topic, e.payload.encode())
    audit.close()


def test_an_acknowledged_gap_no_longer_alarms_but_stays_on_record_and_a_new_one_does(tmp_path, capsys):
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1", "u2", "u3", "u4", "u5"], lost={2, 3})
    rc, gaps, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"]) for g in gaps] == [(2, 3)]

    rc, made, err = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "2-3",
                         "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == 0 and "Traceback" not in err
    assert [{k: a[k] for k in ("by", "reason", "device_id", "event_stream", "what", "first", "last")}
            for a in made] == [{"by": BY, "reason": WHY, "device_id": "front", "event_stream": stream,
                                "what": "missing", "first": 2, "last": 3}]
    assert made[0]["at"] and made[0]["still_missing"] == 2

    rc, gaps, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 0 and gaps == []  # the nightly check is quiet
    rc, gaps, _ = _cli(db, "gaps", "--all", capsys=capsys)
    assert rc == 0 and [(g["first"], g["last"], g["missing"]) for g in gaps] == [(2, 3, 2)]
    assert gaps[0]["acknowledged"] == {"id": made[0]["id"], "at": made[0]["at"], "by": BY, "reason": WHY}
    assert gaps[0]["after"]["event_seq"] == 1 and gaps[0]["before"]["event_seq"] == 4
    rc, (summary,), _ = _cli(db, "streams", capsys=capsys)
    assert (summary["missing"], summary["acknowledged_missing"], summary["received"]) == (0, 2, 3)
    # durable, and the evidence stays: the numbers are still not received
    rc, listed, _ = _cli(db, "acknowledgments", "--door", "front", capsys=capsys)
    assert rc == 0 and listed == made
    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT seq FROM sequenced ORDER BY seq")] == [1, 4, 5]
    conn.close()

    # an event lost after the sign-off: number 7 (6 and 8 arrive) — counted, listed alone
    _more(tmp_path, outbox, ["u6", "u7", "u8"], lost={7})
    rc, gaps, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"]) for g in gaps] == [(7, 7)] and "acknowledged" not in gaps[0]
    rc, gaps, _ = _cli(db, "gaps", "--all", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"], "acknowledged" in g) for g in gaps] == [(2, 3, True), (7, 7, False)]
    outbox.close()


def test_a_signed_off_number_that_arrives_later_is_received_and_the_rest_stays_signed_off(tmp_path, capsys):
    """Part of an acknowledged gap arriving late splits it; the sign-off covers only its own
    numbers, so it cannot grow over anything new, and says how many are still missing."""
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1", "u2", "u3", "u4", "u5", "u6"], lost={2, 3, 4})
    late = [e for e in outbox.peek(100) if json.loads(e.payload)["event_seq"] == 3]
    rc, made, _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "2-4",
                       "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == 0
    audit = AuditLog(db)
    Intake(audit).handle(late[0].topic, late[0].payload.encode())  # number 3 turns up after all
    audit.close()
    rc, gaps, _ = _cli(db, "gaps", "--all", capsys=capsys)
    assert rc == 0 and [(g["first"], g["last"], g["acknowledged"]["id"]) for g in gaps] == \
        [(2, 2, made[0]["id"]), (4, 4, made[0]["id"])]
    rc, (summary,), _ = _cli(db, "streams", capsys=capsys)
    assert (summary["missing"], summary["acknowledged_missing"], summary["received"]) == (0, 2, 4)
    rc, (listed,), _ = _cli(db, "acknowledgments", capsys=capsys)
    assert listed["still_missing"] == 2
    # the arrived number cannot be signed off as missing, and 2 is signed off already
    rc, _, err = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "3",
                      "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == EX_DATAERR and "number 3 was received" in err
    rc, _, err = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "2",
                      "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == EX_DATAERR and f"#{made[0]['id']}" in err
    outbox.close()


def _restore_twice(tmp_path, db, capsys) -> tuple[str, dict]:
    """An outbox restored from a copy: number 3 given to two events (u3, then u4)."""
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    _put(outbox, "u1", "u2")
    outbox.close()
    shutil.copy(path, tmp_path / "copy.db")
    audit = AuditLog(db)
    intake = Intake(audit)
    outbox = Outbox(path)
    _put(outbox, "u3")
    for e in outbox.peek(10):
        intake.handle(e.topic, e.payload.encode())
    outbox.close()
    shutil.copy(tmp_path / "copy.db", path)
    outbox = Outbox(path)
    _put(outbox, "u4")
    for e in outbox.peek(10):
        intake.handle(e.topic, e.payload.encode())
    stream = outbox.stream
    outbox.close()
    audit.close()
    return stream, intake


def test_acknowledged_reused_numbers_stop_alarming_until_a_number_is_given_again(tmp_path, capsys):
    db = tmp_path / "audit.db"
    stream, _ = _restore_twice(tmp_path, db, capsys)
    rc, gaps, err = _cli(db, "gaps", capsys=capsys)
    assert rc == 1 and "given to two events" in err

    rc, _, err = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--reused", "2-3",
                      "--by", BY, "--reason", "SD card restored", capsys=capsys)
    assert rc == EX_DATAERR and "number 2 was not given to a second event" in err  # only 3 was
    rc, made, _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--reused", "3",
                       "--by", BY, "--reason", "SD card restored from the 2026-11-30 image", capsys=capsys)
    assert rc == 0 and made[0]["what"] == "reused" and [e["event_seq"] for e in made[0]["events"]] == [3]
    rc, gaps, err = _cli(db, "gaps", capsys=capsys)
    assert rc == 0 and gaps == [] and err == ""
    rc, (summary,), _ = _cli(db, "streams", capsys=capsys)
    assert (summary["reused"], summary["acknowledged_reused"]) == (0, 1)
    rc, gaps, err = _cli(db, "gaps", "--all", capsys=capsys)
    assert rc == 0 and "acknowledged" in err
    conn = sqlite3.connect(db)  # the evidence stays
    assert conn.execute("SELECT count(*) FROM sequence_reused").fetchone()[0] == 1
    conn.close()
    # signed off once is once: naming it again is refused
    rc, _, err = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--reused", "3",
                      "--by", BY, "--reason", "again", capsys=capsys)
    assert rc == EX_DATAERR

    # the copy restored again: number 3 given to a third event after the sign-off — counts again
    shutil.copy(tmp_path / "copy.db", tmp_path / "outbox.db")
    outbox = Outbox(tmp_path / "outbox.db")
    _put(outbox, "u5")
    audit = AuditLog(db)
    intake = Intake(audit)
    for e in outbox.peek(10):
        intake.handle(e.topic, e.payload.encode())
    audit.close()
    outbox.close()
    rc, gaps, err = _cli(db, "gaps", capsys=capsys)
    assert rc == 1 and "given to two events" in err
    rc, (summary,), _ = _cli(db, "streams", capsys=capsys)
    assert (summary["reused"], summary["acknowledged_reused"]) == (1, 0)
    # and that one can be signed off in its turn
    rc, made, _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--reused", "3",
                       "--by", BY, "--reason", "restored again", capsys=capsys)
    assert rc == 0 and len(made[0]["events"]) == 1
    rc, _, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 0


@pytest.mark.parametrize("args, said", [
    (["--missing", "1"], "number 1 was received"),
    (["--missing", "2-4"], "number 4 was received"),
    (["--missing", "6"], "the last number recorded of this stream is 5"),
    (["--missing", "3-2"], "not a range"),
    (["--missing", "0"], "not a range"),
    (["--missing", "two"], "not a number"),
    (["--missing", str(2**63)], "not a range"),
    (["--reused", "2"], "number 2 was not given to a second event"),
    (["--missing", "2", "--missing", "3", "--missing", "1"], "number 1 was received"),  # all or nothing
    (["--missing", "2-3", "--missing", "3"], "overlap"),
    ([], "nothing to acknowledge"),
    (["--missing", "2", "--by", "  "], "by: required"),
    (["--missing", "2", "--reason", ""], "reason: required"),
    (["--missing", "2", "--by", "eve\nINFO forged line"], "control characters"),
    (["--missing", "2", "--reason", "x\x1b[2J"], "control characters"),
    (["--missing", "2", "--reason", "x" * 4001], "at most 4000"),
    (["--missing", "2", "--door", "back"], "has no stream"),
    (["--missing", "2", "--stream", "0" * 32], "has no stream"),
    (["--missing", "2", "--stream", "not-a-stream"], "stream: an outbox stream id"),
    # found in review 94: bytes that are not UTF-8 on the command line (lone surrogates) were a
    # traceback; C1 controls, line separators, bidi overrides and invisible characters in who
    # signed off read as forged log lines or another name
    (["--missing", "2", "--by", "j.smith\udcff"], "not UTF-8"),
    (["--missing", "2", "--reason", "lost\udce9"], "not UTF-8"),
    (["--missing", "2", "--door", "fr\udcffont"], "door: required"),
    (["--missing", "2", "--by", "eve\x85INFO forged"], "control"),
    (["--missing", "2", "--reason", "ok\u2028INFO forged line"], "control"),
    (["--missing", "2", "--reason", "INC-1 \u202edias ti"], "bidirectional"),
    (["--missing", "2", "--by", "j.sm\u200bith"], "invisible"),
])
def test_an_acknowledgment_naming_numbers_not_missing_or_bad_input_is_refused(tmp_path, capsys, args, said):
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1", "u2", "u3", "u4", "u5"], lost={2, 3})
    outbox.close()
    base = {"--door": "front", "--stream": stream, "--by": BY, "--reason": WHY}
    for key in list(base):
        if key in args:
            base.pop(key)
    argv = ["acknowledge", *[x for kv in base.items() for x in kv], *args]
    rc, out, err = _cli(db, *argv, capsys=capsys)
    assert rc == EX_DATAERR and out == [] and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and said in err
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM acknowledged").fetchone()[0] == 0
    conn.close()
    rc, gaps, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"]) for g in gaps] == [(2, 3)]


def test_who_and_why_are_required_and_sign_offs_cannot_be_changed(tmp_path, capsys):
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1", "u2", "u3"], lost={2})
    outbox.close()
    with pytest.raises(SystemExit) as usage:  # argparse: exit 2, a usage line
        logger_main(["--db", str(db), "acknowledge", "--door", "front", "--stream", stream, "--missing", "2",
                     "--by", BY])
    assert usage.value.code == 2 and "--reason" in capsys.readouterr().err
    rc, made, _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "2",
                       "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == 0
    conn = sqlite3.connect(db)
    for statement in ("UPDATE acknowledged SET reason = 'nothing to see'", "DELETE FROM acknowledged"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
    conn.close()
    rc, listed, _ = _cli(db, "acknowledgments", capsys=capsys)
    assert listed == made


def test_numbers_before_the_first_received_can_be_signed_off(tmp_path, capsys):
    """A log started after the doors: the numbers before the first received one never arrive."""
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1", "u2", "u3", "u4"], lost={1, 2})
    outbox.close()
    rc, _, _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "1-2",
                    "--by", BY, "--reason", "logger installed 2026-12-07, after the doors", capsys=capsys)
    assert rc == 0
    rc, gaps, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 0 and gaps == []
    rc, gaps, _ = _cli(db, "gaps", "--all", capsys=capsys)
    assert rc == 0 and [(g["first"], g["last"], g["after"]) for g in gaps] == [(1, 2, None)]


def test_signing_off_part_of_a_gap_leaves_the_rest_counted(tmp_path, capsys):
    """Only the numbers investigated are signed off: the rest of the same gap still alarms."""
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"], lost={2, 3, 4, 5, 6})
    outbox.close()
    rc, (low,), _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "2-3",
                         "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == 0
    rc, gaps, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"], g["missing"]) for g in gaps] == [(4, 6, 3)]
    assert gaps[0]["after"]["event_seq"] == 1 and gaps[0]["before"]["event_seq"] == 7  # the whole gap's
    rc, (high,), _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "6",
                          "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == 0
    rc, gaps, _ = _cli(db, "gaps", "--all", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"], g.get("acknowledged", {}).get("id")) for g in gaps] == \
        [(2, 3, low["id"]), (4, 5, None), (6, 6, high["id"])]
    rc, (summary,), _ = _cli(db, "streams", capsys=capsys)
    assert (summary["missing"], summary["acknowledged_missing"]) == (2, 3)


def test_a_sign_off_while_another_writer_holds_the_database_is_a_typed_refusal(tmp_path, capsys):
    """Found in review 94: the database locked (by the running logger, a requeue) past the
    connection's timeout was a traceback. Exit 75, one line, nothing recorded; again later works."""
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1", "u2", "u3"], lost={2})
    outbox.close()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        rc, out, err = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "2",
                            "--by", BY, "--reason", WHY, capsys=capsys)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert rc == EX_TEMPFAIL and out == [] and "Traceback" not in err
    assert "database is locked" in err and "nothing recorded" in err
    rc, made, _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "2",
                       "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == 0 and len(made) == 1


def test_a_sign_off_of_thousands_of_ranges_does_not_make_the_running_logger_lose_events(tmp_path, capsys):
    """Found in review 94: every range was checked against every other one inside the write
    transaction, so thousands of ``--missing N`` (a script signing off a full outbox's drops one by
    one) held the database for many seconds; the running logger's insert waited out its timeout
    and raised, and the MQTT client acknowledges a message whose handler raised: the event was
    lost. Now at most ACK_RANGES_MAX ranges, checked before the lock is taken."""
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1"], lost=set())
    _put(outbox, "u2", "u3")
    second, third = outbox.peek(10)[1:3]
    outbox.close()
    audit = AuditLog(db)
    intake = Intake(audit)
    # the door's outbox numbered 12002 next: 2-12001 dropped while it was full
    far = {**json.loads(second.payload), "event_seq": 12002}
    intake.handle(second.topic, json.dumps(far).encode())
    said: dict = {}

    def sign_off() -> None:
        said["rc"] = logger_main(["--db", str(db), "acknowledge", "--door", "front", "--stream", stream,
                                  *[x for n in range(2, 12002) for x in ("--missing", str(n))],
                                  "--by", BY, "--reason", WHY])

    signing = threading.Thread(target=sign_off)
    signing.start()
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    while signing.is_alive():  # until it is done, or holds the database
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            break
    probe.close()
    late = {**json.loads(third.payload), "event_seq": 12003}
    intake.handle(third.topic, json.dumps(late).encode())  # the running logger, meanwhile
    signing.join()
    audit.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM sequenced WHERE seq = 12003").fetchone()[0] == 1
    err = capsys.readouterr().err
    assert said["rc"] == EX_DATAERR and "at most 1000" in err
    assert conn.execute("SELECT count(*) FROM acknowledged").fetchone()[0] == 0
    conn.close()
    # as many as are accepted, in one command, all recorded
    rc, made, _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream,
                       *[x for n in range(2, 2 + ACK_RANGES_MAX) for x in ("--missing", str(n))],
                       "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == 0 and len(made) == ACK_RANGES_MAX


def test_a_quarantined_number_far_ahead_does_not_let_a_sign_off_cover_the_future(tmp_path, capsys):
    """A message on the door's topic that the logger quarantines can carry any ``event_seq`` (a
    door's bug, garbage): it counts as received, so ``gaps`` shows every number before it missing.
    A sign-off reaching past the last number *recorded* would also cover every loss still to come
    on that stream (found in review 94): refused; the numbers up to the last recorded one can be."""
    db = tmp_path / "audit.db"
    outbox, stream = _deliver(tmp_path, ["u1", "u2", "u3", "u4", "u5"], lost={3})
    (e,) = [e for e in outbox.peek(10) if json.loads(e.payload)["event_seq"] == 5]
    far = json.loads(e.payload)
    far.update(event_seq=1_000_000, event_id="garbage-far-ahead", similarity="high")  # quarantined
    audit = AuditLog(db)
    intake = Intake(audit)
    intake.handle(e.topic, json.dumps(far).encode())
    assert intake.quarantined == 1
    audit.close()
    rc, gaps, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"]) for g in gaps] == [(3, 3), (6, 999_999)]

    rc, made, err = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "6-999999",
                         "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == EX_DATAERR and made == [] and "Traceback" not in err and "recorded" in err
    rc, made, _ = _cli(db, "acknowledge", "--door", "front", "--stream", stream, "--missing", "3",
                       "--by", BY, "--reason", WHY, capsys=capsys)
    assert rc == 0 and [(a["first"], a["last"]) for a in made] == [(3, 3)]
    rc, gaps, _ = _cli(db, "gaps", capsys=capsys)
    assert rc == 1 and [(g["first"], g["last"]) for g in gaps] == [(6, 999_999)]  # still said
