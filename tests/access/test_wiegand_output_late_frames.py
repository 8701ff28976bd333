"""A Wiegand frame is never sent after it was reported as not sent, nor late (found in review).

gpiozero's mock pins (tests/gpio.py: the real gpiozero devices, no Pi), the real transmitter.

- close() waits JOIN_S for the frames it knows of and reports every one still unfinished as
  "... the panel did not get it". A frame waiting for the wire (queued behind another) was not
  stopped: when close() could not take the wire within 0.5 s it returned with the lines as they
  were, and the queued frame then went out whole -- the panel reads it and opens the door while
  the audit trail holds an ACTUATION_FAILED saying it did not.
- A frame on the wire whose every bit had gone out (only its last release was slow) was
  reported the same way, "the panel did not get it".
- A frame queued behind a stalled one went out whenever the wire came free, seconds later --
  the door opening when nobody may be at it any more (the OSDP reader drops a read not
  delivered within its window for that reason).
"""

from __future__ import annotations

import threading

import pytest

from facelink.access.panel import PanelLink
from facelink.access.wiegand import Credential, decode
from facelink.access.wiegand_gpio import WiegandGpioOutput
from facelink.enroll import credentials, faces, users

from ..waiting import wait_until
from .test_wiegand_output import Failures, _granted

D0, D1 = 23, 24
ANN, BOB = "H10301:42:31337", "H10306:4242:65000"


@pytest.fixture()
def link(ctx, gpio):
    faces.create_collection(ctx, "door")
    for user, badge in (("ann", ANN), ("bob", BOB)):
        users.create_user(ctx, "door", user)
        credentials.put_user_credential(ctx, "door", user, badge)
    out = WiegandGpioOutput(D0, D1, 50, 2000)
    out.max_gap_us = 10_000_000  # these tests judge what is sent, not the CPU's timing
    link = PanelLink(ctx.store, "door", out)
    yield link
    link.close()




def _senders_done() -> bool:
    return not any(t.name == "wiegand-out" for t in threading.enumerate())


def _read_by_panel(gpio) -> list[str]:
    out = []
    for bits in gpio.wiegand_frames(D0, D1):
        try:
            out.append(str(decode(bits)))
        except Exception:  # noqa: BLE001 - a piece the panel reads as a parity/length error
            continue
    return out


def test_a_frame_queued_at_close_and_reported_not_sent_is_never_sent(link, gpio):
    ann, bob = Failures(), Failures()
    link.sender.JOIN_S = 0.2
    gpio.delay(2, 1.5)  # ann's bit 1 on() hangs 1.5 s: the wire is held past close()'s waits
    assert link.on_decision(_granted("ann"), on_failure=ann) is None
    assert link.on_decision(_granted("bob"), on_failure=bob) is None  # queued behind ann's frame
    link.sender.close()
    assert bob.came.is_set() and "did not get it" in bob.reasons[0]  # ACTUATION_FAILED: not opened
    assert wait_until(_senders_done, 20)
    assert BOB not in _read_by_panel(gpio), "bob's frame went out after it was reported as not sent"
    assert len(bob.reasons) == 1


def test_a_frame_whose_every_bit_went_out_is_not_reported_as_not_received_at_close(link, gpio):
    failures = Failures()
    link.sender.JOIN_S = 0.5  # (the 25 bits before take ~50 ms)
    gpio.delay(51, 2.0)  # write 52: bit 25's off(), after its edge went out: every bit is out
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    link.sender.close()
    assert wait_until(_senders_done, 20)
    assert _read_by_panel(gpio) == [ANN]  # the panel read it
    assert len(failures.reasons) == 1
    assert "did not get it" not in failures.reasons[0], failures.reasons[0]
    assert "may have read the credential itself" in failures.reasons[0]


def test_a_frame_held_up_behind_a_stalled_one_is_not_sent_late(link, gpio):
    ann, bob = Failures(), Failures()
    gpio.delay(2, 3.0)  # ann's frame stalls 3 s on the wire
    assert link.on_decision(_granted("ann"), on_failure=ann) is None
    assert link.on_decision(_granted("bob"), on_failure=bob) is None
    assert wait_until(_senders_done, 20)
    assert BOB not in _read_by_panel(gpio), "bob's frame reached the panel 3 s late"
    assert len(bob.reasons) == 1 and "did not get it" in bob.reasons[0]
    assert Credential.parse(BOB)  # (the badge itself is valid: only its lateness stopped it)
