"""Each decision says when the door's wall clock — its ``timestamp`` — was not synchronized
(the kernel's adjtimex state), so that an auditor knows which times to doubt: a Pi has no
battery clock and after a power cut without network decides on fake-hwclock's old time."""

from __future__ import annotations

import json

import pytest

from facelink.audit.intake import Intake
from facelink.audit.store import AuditLog
from facelink.device import wall_clock
from facelink.device.decision import Decision


def test_the_kernel_is_asked_and_answers():
    """On Linux the kernel answers (True or False, never None), and a second reading agrees."""
    first = wall_clock.synchronized()
    assert isinstance(first, bool)
    assert wall_clock.synchronized() is first


@pytest.mark.parametrize("synced", [False, True, None])
def test_only_an_unsynchronized_clock_is_published_and_the_logger_keeps_it(tmp_path, synced):
    granted = Decision("GRANTED", "front", "door", "m", 99.0, user_id="ann", similarity=99.5,
                       clock_synchronized=synced)
    payload = granted.payload()
    # false is said; true and unknown are left out, so a logger that predates the field still
    # accepts every decision of a synchronized door
    assert ("clock_synchronized" in payload) == (synced is False)
    audit = AuditLog(tmp_path / "audit.db")
    intake = Intake(audit)
    intake.handle("facelink/front/decision", json.dumps(payload).encode())
    (row,) = audit.query(user="ann")
    assert row.get("clock_synchronized", "absent") == (False if synced is False else "absent")
    assert (intake.recorded, intake.quarantined) == (1, 0)
    audit.close()


def test_every_decision_is_stamped_with_the_clock_state_of_its_making():
    made = Decision("ERROR", "front", "door", "m", 99.0, reason="x")
    assert made.clock_synchronized is wall_clock.synchronized()
