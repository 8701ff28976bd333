"""The Wiegand output on gpiozero (its mock pin factory: the real gpiozero devices, no Pi): a
GRANTED user's credential goes out as a frame a Wiegand input decodes, and a frame that fails on
the wire is reported (the panel did not get it, or may have read it whole; what it may have read instead) with the lines
left idle -- never lost in the sender's thread, never said twice.

Tests that expect a frame to go through give the transmitter a 1 s gap limit: on a loaded CI
machine a thread can be held over 20 ms between two bits, and the transmitter rightly reports
that (tested on its own below with a write that takes 30 ms)."""

from __future__ import annotations

import threading

import pytest

from facelink.access.panel import PanelLink
from facelink.access.wiegand import Credential, decode
from facelink.access.wiegand_gpio import MAX_GAP_US, WiegandGpioOutput
from facelink.device.decision import GRANTED, Decision
from facelink.enroll import credentials, faces, users
from facelink.errors import ConfigError

from ..waiting import wait_until

D0, D1 = 23, 24
BADGES = {"ann": "H10301:42:31337", "bob": "H10306:4242:65000",
          # its first 26 bits are a valid H10301 badge: H10301:253:43494
          "cat": "H10306:64937:58915"}


class Failures:
    """What ``on_failure`` was told."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.came = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.came.set()


@pytest.fixture()
def link(ctx, gpio):
    """A PanelLink with the Wiegand output on D0/D1 (gap limit 1 s) and badges for ann, bob, cat."""
    faces.create_collection(ctx, "door")
    for user, badge in BADGES.items():
        users.create_user(ctx, "door", user)
        credentials.put_user_credential(ctx, "door", user, badge)
    out = WiegandGpioOutput(D0, D1, 50, 2000)
    out.max_gap_us = 1_000_000
    link = PanelLink(ctx.store, "door", out)
    yield link
    link.close()


def _granted(user: str) -> Decision:
    return Decision(GRANTED, "door-1", "door", "m", 99.0, user_id=user, similarity=99.8)


def _idle(gpio) -> bool:
    return gpio.gpio(D0).state == 1 and gpio.gpio(D1).state == 1  # Wiegand lines idle high


def _senders_done() -> bool:
    return not any(t.name == "wiegand-out" for t in threading.enumerate())


def test_a_granted_users_credential_is_the_frame_the_panel_reads(link, gpio):
    failures = Failures()
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert link.on_decision(_granted("bob"), on_failure=failures) is None
    assert wait_until(lambda: link.sender.sent == 2, 10)
    first, second = gpio.wiegand_frames(D0, D1)  # two frames, not one run into the other
    assert decode(first) == Credential("H10301", 42, 31337)
    assert decode(second) == Credential("H10306", 4242, 65000)
    assert _idle(gpio) and not failures.reasons
    assert wait_until(_senders_done, 10)  # each sender leaves after the gap behind its frame
    assert link.health() == {"wiegand_sent": 2, "wiegand_failed": 0, "wiegand_stuck": None, "wiegand_waiting": 0}


def test_a_frame_that_breaks_off_is_reported_and_the_lines_left_idle(link, gpio):
    """Bit 3's off() fails: its line is held low, the panel reads a parity error. It used to raise
    in the sender's thread and be lost (the audit trail said the door opened)."""
    failures = Failures()
    gpio.fail(5)  # write 6: bit 2's off()
    assert link.on_decision(_granted("ann"), on_failure=failures) is None  # started
    assert failures.came.wait(10)
    assert failures.reasons[0].startswith("Wiegand output failed after 3 of 26 bits: OSError")
    assert "H10301:42:31337" in failures.reasons[0] and "the panel did not get it" in failures.reasons[0]
    assert _idle(gpio)  # the held line was let go
    assert wait_until(lambda: link.health()["wiegand_failed"] == 1, 10)
    assert link.health()["wiegand_stuck"] is None


def test_a_frame_broken_where_its_start_is_another_badge_says_so(link, gpio):
    """cat's 34-bit frame breaks after bit 26: those 26 bits are a valid H10301 badge, which the
    panel may take for someone else's. The report names it (an ACTUATION_FAILED that said only
    "the panel did not get it" would hide who the panel may have let in)."""
    failures = Failures()
    gpio.fail(52)  # write 53: bit 26's on()
    assert link.on_decision(_granted("cat"), on_failure=failures) is None
    assert failures.came.wait(10)
    assert "after 26 of 34 bits" in failures.reasons[0]
    assert "the panel may have read H10301:253:43494 instead" in failures.reasons[0]


def test_a_frame_whose_last_release_fails_may_have_been_read(link, gpio):
    """Every bit went out and only the last bit's release failed: the panel may have read the
    credential itself. The report said "the panel did not get it" (a review, helper-38): on a door
    the panel opens, an ACTUATION_FAILED for a door that may have opened."""
    failures = Failures()
    gpio.fail(51)  # write 52: bit 25's off(), the frame's last write
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert failures.came.wait(10)
    assert [decode(f) for f in gpio.wiegand_frames(D0, D1)] == [Credential("H10301", 42, 31337)]
    reason = failures.reasons[0]
    assert "after 26 of 26 bits" in reason and "the panel may have read the credential itself" in reason
    assert "did not get it" not in reason and "instead" not in reason, reason


@pytest.mark.parametrize("write", [1, 51], ids=["first bit", "last bit"])
def test_a_frame_stretched_past_the_wiegand_gap_is_reported(link, gpio, write):
    """A write that takes 30 ms (the CPU was busy) ends the frame at the panel. The gap is
    measured from before one bit's write to after the next one's returned: a late last bit
    counts too (it used to be missed: the panel read 25 bits and the report said sent)."""
    link.sender.max_gap_us = MAX_GAP_US
    failures = Failures()
    gpio.delay(write - 1, 0.03)  # bit 0's or bit 25's on()
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert failures.came.wait(10)
    assert failures.reasons[0].startswith("Wiegand frame broken: up to 3")
    # every bit went out (a panel with a longer frame timeout reads it whole): not "did not get it"
    assert "may have read the credential itself" in failures.reasons[0]
    assert "did not get it" not in failures.reasons[0], failures.reasons[0]
    assert _idle(gpio) and wait_until(lambda: link.health()["wiegand_failed"] == 1, 10)


def test_a_line_that_cannot_go_idle_is_stuck_and_later_frames_are_refused(link, gpio):
    """The line stays active: every later frame would be garbage, so frames are refused with the
    reason -- a send at once, and a frame already queued behind the failing one when it comes
    to the wire -- until the line goes idle again (health says it meanwhile)."""
    failures = Failures()
    gpio.gpio(D0).fail_writes = 1_000_000
    gpio.delay(0, 0.5)  # ann's first write hangs, then fails: bob's frame is queued meanwhile
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert link.on_decision(_granted("bob"), on_failure=failures) is None
    assert wait_until(lambda: len(failures.reasons) == 2, 10)
    stuck = link.health()["wiegand_stuck"]
    assert stuck is not None and "D0" in stuck and stuck in failures.reasons[0]
    assert failures.reasons[1].startswith(f"not sent: {stuck}") and "H10306:4242:65000" in failures.reasons[1]
    assert failures.reasons[1].count(stuck) == 1  # idling was tried once for it, and said once
    refused = link.on_decision(_granted("ann"), on_failure=failures)
    assert refused is not None and "D0 line may be held active" in refused
    gpio.gpio(D0).fail_writes = 0  # the line works again
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert wait_until(lambda: link.sender.sent == 1, 10)
    assert link.health()["wiegand_stuck"] is None and _idle(gpio)
    assert len(failures.reasons) == 2  # the refused one was said at once, not again later


def test_close_waits_for_the_frame_being_sent(link, gpio):
    assert link.on_decision(_granted("ann")) is None
    link.close()  # at once: the frame is on the wire
    assert link.sender.sent == 1
    assert [decode(f) for f in gpio.wiegand_frames(D0, D1)] == [Credential("H10301", 42, 31337)]
    assert link.on_decision(_granted("ann")) == "Wiegand output is stopping: nothing was sent"


def test_a_frame_still_on_the_wire_at_close_is_reported_once(link, gpio):
    """A write hangs past close()'s wait: close() reports the frame (the daemon still has its
    outbox then; a report from the sender thread later would be lost) and the thread, when it
    ends, says nothing more."""
    failures = Failures()
    link.sender.JOIN_S = 0.2
    gpio.delay(2, 1.0)  # bit 1's on()
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    link.close()
    assert len(failures.reasons) == 1 and "still on the wire after 0.2 s" in failures.reasons[0]
    assert wait_until(_senders_done, 10)
    assert len(failures.reasons) == 1 and link.health()["wiegand_failed"] == 1


def test_close_lets_a_held_line_go(link, gpio):
    """The frame's off() fails and so do the retries right after it: the line is held low and
    stuck; at close() it works again, and close() lets it go before releasing the pins."""
    failures = Failures()
    gpio.fail(1, 2)  # write 2: bit 0's off(); write 3: letting the line go right after
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert failures.came.wait(10) and link.sender.stuck is not None
    held = [p for p in (D0, D1) if gpio.gpio(p).state == 0]
    assert held  # a line is held active
    link.close()
    assert link.sender.stuck is None and all(gpio.gpio(p).state == 1 for p in held)


def test_a_report_that_raises_does_not_kill_the_sender(link, gpio):
    """on_failure raising (the daemon's outbox failing) is logged; the thread ends normally and
    the next frame goes out."""
    uncaught: list[BaseException] = []
    previous, threading.excepthook = threading.excepthook, lambda args: uncaught.append(args.exc_value)

    def broken(reason: str) -> None:
        raise RuntimeError("outbox: disk I/O error")

    try:
        gpio.fail(0)
        assert link.on_decision(_granted("ann"), on_failure=broken) is None
        assert wait_until(lambda: link.health()["wiegand_failed"] == 1, 10)
        assert link.on_decision(_granted("ann")) is None
        assert wait_until(lambda: link.sender.sent == 1, 10)
        assert wait_until(_senders_done, 10) and not uncaught
    finally:
        threading.excepthook = previous


def test_a_pin_in_use_is_a_config_error_naming_the_key(gpio):
    from gpiozero import DigitalOutputDevice

    busy = DigitalOutputDevice(D1)
    try:
        with pytest.raises(ConfigError, match=r"wiegand\.d1_pin: cannot use GPIO 24"):
            WiegandGpioOutput(D0, D1, 50, 2000)
        DigitalOutputDevice(D0).close()  # D0 was released again
    finally:
        busy.close()


def test_a_whole_frame_whose_line_then_sticks_still_may_have_been_read(link, gpio):
    """The last bit's release fails and the lines then cannot be set idle: the report adds why
    (stuck) but still must not say "the panel did not get it" (every bit went out)."""
    failures = Failures()
    gpio.fail(51, 52)  # write 52: bit 25's off(); write 53: the idling's D0 off()
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert failures.came.wait(10)
    reason = failures.reasons[0]
    assert "after 26 of 26 bits" in reason and "the panel may have read the credential itself" in reason
    assert link.health()["wiegand_stuck"] is not None and link.health()["wiegand_stuck"] in reason
    assert "did not get it" not in reason, reason


def test_frames_behind_a_hung_write_are_bounded_and_said_on_health(link, gpio):
    """A GPIO write that hangs: each GRANTED queued a sender thread behind it with no limit and
    health said nothing (found in review). At MAX_FRAMES on the wire or waiting, new frames are
    refused at once (ACTUATION_FAILED for the daemon), and health counts them."""
    from facelink.access.wiegand_gpio import MAX_FRAMES

    failures = Failures()
    gpio.delay(0, 3.0)  # ann's first bit hangs for 3 s
    for _ in range(MAX_FRAMES):
        assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert link.health()["wiegand_waiting"] == MAX_FRAMES
    refused = link.on_decision(_granted("bob"), on_failure=failures)
    assert refused is not None and f"{MAX_FRAMES} frames already on the wire or waiting" in refused
    assert wait_until(_senders_done, 30)  # the write came back: the ones that waited too long were dropped
    assert link.health()["wiegand_waiting"] == 0
    assert link.health()["wiegand_sent"] + link.health()["wiegand_failed"] == MAX_FRAMES
