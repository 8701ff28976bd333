"""The Wiegand output on gpiozero (its mock pin factory: the real gpiozero devices, no Pi): a
GRANTED user's credential goes out as a frame a Wiegand input decodes, and a frame that fails on
the wire is reported (the panel did not get it) with the lines left idle -- never lost in the
sender's thread."""

from __future__ import annotations

import threading

import pytest

from facelink.access.panel import PanelLink
from facelink.access.wiegand import Credential, decode
from facelink.access.wiegand_gpio import WiegandGpioOutput
from facelink.device.decision import GRANTED, Decision
from facelink.enroll import credentials, faces, users
from facelink.errors import ConfigError

from ..waiting import wait_until

D0, D1 = 23, 24


class Failures:
    """What ``on_failure`` was told, and when."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.came = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.came.set()


@pytest.fixture()
def link(ctx, gpio):
    """A PanelLink with the Wiegand output on D0/D1 and a collection where ann has a badge."""
    faces.create_collection(ctx, "door")
    for user in ("ann", "bob"):
        users.create_user(ctx, "door", user)
    credentials.put_user_credential(ctx, "door", "ann", "H10301:42:31337")
    credentials.put_user_credential(ctx, "door", "bob", "H10306:4242:65000")
    out = WiegandGpioOutput(D0, D1, 50, 2000)
    link = PanelLink(ctx.store, "door", out)
    yield link
    link.close()


def _granted(user: str) -> Decision:
    return Decision(GRANTED, "door-1", "door", "m", 99.0, user_id=user, similarity=99.8)


def _idle(gpio) -> bool:
    return gpio.gpio(D0).state == 1 and gpio.gpio(D1).state == 1  # Wiegand lines idle high


def test_a_granted_users_credential_is_the_frame_the_panel_reads(link, gpio):
    failures = Failures()
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert link.on_decision(_granted("bob"), on_failure=failures) is None
    assert wait_until(lambda: link.sender.sent == 2, 10)
    first, second = gpio.wiegand_frames(D0, D1)  # two frames, not one run into the other
    assert decode(first) == Credential("H10301", 42, 31337)
    assert decode(second) == Credential("H10306", 4242, 65000)
    assert _idle(gpio) and not failures.reasons
    assert link.health() == {"wiegand_sent": 2, "wiegand_failed": 0, "wiegand_stuck": None}


def test_a_frame_that_breaks_off_is_reported_and_the_lines_left_idle(link, gpio):
    """A GPIO write that fails half-way through the frame: the panel reads a parity error and
    opens nothing. It used to raise in the sender's thread and be lost (the audit trail said the
    door opened)."""
    failures = Failures()
    gpio.gpio(D1).fail_writes = 1
    assert link.on_decision(_granted("ann"), on_failure=failures) is None  # started
    assert failures.came.wait(10)
    assert "OSError" in failures.reasons[0] and "H10301:42:31337" in failures.reasons[0]
    assert "the panel did not get it" in failures.reasons[0]
    assert _idle(gpio)
    assert link.health()["wiegand_failed"] == 1 and link.health()["wiegand_stuck"] is None


def test_a_line_that_cannot_go_idle_is_stuck_and_later_frames_are_refused(link, gpio):
    """The line the frame broke off on stays active: every later frame would be garbage, so the
    next send is refused with the reason (health says it) until the line goes idle again."""
    failures = Failures()
    gpio.gpio(D0).fail_writes = 1_000_000
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert failures.came.wait(10)
    stuck = link.health()["wiegand_stuck"]
    assert stuck is not None and "D0" in stuck and stuck in failures.reasons[0]
    refused = link.on_decision(_granted("ann"), on_failure=failures)
    assert refused is not None and "D0 line may be held active" in refused
    gpio.gpio(D0).fail_writes = 0  # the line works again
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert wait_until(lambda: link.sender.sent == 1, 10)
    assert link.health()["wiegand_stuck"] is None and _idle(gpio)
    assert len(failures.reasons) == 1  # the refused one was said at once, not again later


def test_a_frame_stretched_past_the_wiegand_gap_is_reported(link, gpio):
    """A pause over 20 ms between two bits (the CPU was busy) ends the frame at the panel."""
    failures = Failures()
    pin = gpio.gpio(D1)
    pin.slow_writes, pin.write_delay_s = 1, 0.03
    assert link.on_decision(_granted("ann"), on_failure=failures) is None
    assert failures.came.wait(10)
    assert "between two bits" in failures.reasons[0]
    assert _idle(gpio) and link.health()["wiegand_failed"] == 1


def test_close_waits_for_the_frame_being_sent(link, gpio):
    assert link.on_decision(_granted("ann")) is None
    link.close()  # at once: the frame is on the wire
    assert link.sender.sent == 1
    assert [decode(f) for f in gpio.wiegand_frames(D0, D1)] == [Credential("H10301", 42, 31337)]
    assert link.on_decision(_granted("ann")) == "Wiegand output is stopping: nothing was sent"


def test_a_pin_in_use_is_a_config_error_naming_the_key(gpio):
    from gpiozero import DigitalOutputDevice

    busy = DigitalOutputDevice(D1)
    try:
        with pytest.raises(ConfigError, match=r"wiegand\.d1_pin: cannot use GPIO 24"):
            WiegandGpioOutput(D0, D1, 50, 2000)
        DigitalOutputDevice(D0).close()  # D0 was released again
    finally:
        busy.close()
