"""A plain Wiegand output on two Raspberry Pi GPIO pins (D0, D1) for panels without OSDP.

Both lines idle high (wire them through an open-collector stage or a level shifter to the panel's
5 V inputs); each bit is a low pulse on D0 (0) or D1 (1). Timing comes from
``wiegand.pulse_train``; the sender runs on a thread of its own (a frame lasts 50-75 ms at the
default 2 ms interval) and never blocks the pipeline: it sleeps between pulses and busy-waits only
the last half millisecond and the 50 us width. Frames go out one at a time, each followed by
FRAME_GAP_S of quiet.

Fail closed, and said: a frame that breaks off (a GPIO write raises) or may have been stretched
past the Wiegand limit between two bits (the panel ends the frame there) is reported through
``on_failure`` (the daemon's ACTUATION_FAILED when the panel is what opens the door), with any
credential the panel may have read from the pieces instead (a long frame's first 26 bits can be
another valid badge). The gap is measured conservatively: from before one bit's write to after
the next bit's write returned. The lines are then set idle; a line that cannot be is ``stuck``
(every later frame would be garbage to the panel): health says it and frames are refused, also
ones already queued, until the line goes idle again. A frame that could not start within
MAX_WAIT_S of its GRANTED (queued behind a stalled one) is not sent, and reported. ``close()``
waits up to JOIN_S for the frames on the wire; one still there then is reported from ``close()``
with the bits it had begun (once: the sender thread says nothing more about it, and sends no
more of it, nor a frame still waiting for the wire).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from facelink.errors import ConfigError, FailureReport, InvalidParameterException, ignore_failure

from .wiegand import Credential, Pulse, decode, pulse_train

log = logging.getLogger(__name__)

MAX_GAP_US = 20_000  # Wiegand: at most 20 ms from one bit's pulse to the next, or the frame ends
FRAME_GAP_S = 0.05  # quiet time after a frame: two frames back to back would read as one
SPIN_US = 500  # the last half millisecond before a pulse is busy-waited (sleep is not that precise)
# a frame that could not start within this of its GRANTED (queued behind a stalled one) is not sent:
# it would open the door when nobody may be at it any more (the OSDP reader drops a late read too)
MAX_WAIT_S = 2.0
# frames on the wire or waiting for it; more are refused at once (a write that hangs must not
# pile up a thread per GRANTED: each would be dropped as late anyway)
MAX_FRAMES = 8
# every bit's pulse went out, only a release (or the timing) failed: the panel may have read the
# credential itself, so the report must not say it did not
WHOLE = "every bit went out: the panel may have read the credential itself"
LATE_WHOLE = "every bit went out, some late: a panel that waits longer may have read the credential itself"


class Line(Protocol):
    """One output line: ``on()`` pulls it low (active), ``off()`` lets it idle high."""

    def on(self) -> None: ...

    def off(self) -> None: ...

    def close(self) -> None: ...


def _wait_until(t_ns: int) -> None:
    while (left_ns := t_ns - time.perf_counter_ns()) > SPIN_US * 1000:
        time.sleep((left_ns - SPIN_US * 1000) / 1e9)
    while time.perf_counter_ns() < t_ns:
        pass


def misreads(pieces: list[list[int]]) -> list[str]:
    """The credentials a panel may read from the pieces of a broken frame (a piece that happens to
    have a known format's length and valid parity)."""
    found = []
    for bits in pieces:
        try:
            found.append(str(decode(bits)))
        except InvalidParameterException:
            continue
    return found


@dataclass(frozen=True)
class _Failure:
    """Why a frame failed, and whether every bit went out anyway (``WHOLE``: the panel may have
    read the credential, so the report must not say it did not get it)."""

    what: str
    whole: bool = False


@dataclass
class _Frame:
    credential: Credential
    event_id: str
    bits: list[int]
    pulses: list[Pulse]
    on_failure: FailureReport
    done: bool = False  # sent or reported: nothing more is said about it (nor sent, once reported)
    started: int = 0  # bits whose write began (under _state): what the panel may have got so far
    queued_at: float = field(default_factory=time.monotonic)


class WiegandTransmitter:
    """Sends one credential at a time as a D0/D1 pulse train on two :class:`Line` s."""

    JOIN_S = 2.0  # close(): how long to wait for the frames on the wire (a 37-bit frame at 10 ms: 0.4 s)

    def __init__(self, d0: Line, d1: Line, width_us: int, interval_us: int, max_gap_us: int = MAX_GAP_US) -> None:
        pulse_train([0], width_us, interval_us)  # the timing is checked here, not at the first GRANTED
        if 2 * interval_us > max_gap_us:
            raise InvalidParameterException(f"Wiegand pulse interval {interval_us} us leaves no margin under the "
                                            f"{max_gap_us // 1000} ms limit between bits: at most {max_gap_us // 2} us")
        self._lines = {"D0": d0, "D1": d1}
        self.width_us, self.interval_us, self.max_gap_us = width_us, interval_us, max_gap_us
        self._lock = threading.Lock()  # the wire: one frame (or one idling of the lines) at a time
        self._state = threading.Lock()  # _closed, _frames, stuck, counters; taken after _lock, never before
        self._frames: dict[threading.Thread, _Frame] = {}
        self._closed = False
        self.stuck: str | None = None  # a line could not be set idle: why (None: both idle)
        self.sent = self.failed = 0  # frames completed / reported as failed

    def send(self, credential: Credential, event_id: str, on_failure: FailureReport = ignore_failure) -> str | None:
        """Start sending ``credential``; why it was not started, or None. A frame that fails on the
        wire is reported later through ``on_failure`` (from the sender's thread, or close())."""
        bits = credential.bits()
        frame = _Frame(credential, event_id, bits, pulse_train(bits, self.width_us, self.interval_us), on_failure)
        with self._state:
            if self._closed:
                return "Wiegand output is stopping: nothing was sent"
            if self.stuck is not None and not self._idle_if_free():
                return f"Wiegand output not sent: {self.stuck}"
            if len(self._frames) >= MAX_FRAMES:
                return (f"Wiegand output not sent: {len(self._frames)} frames already on the wire or waiting for "
                        "it (a GPIO write hangs?)")
            thread = threading.Thread(target=self._send, args=(frame,), name="wiegand-out", daemon=True)
            thread.start()  # a thread that cannot start raises to the caller: nothing was sent
            self._frames[thread] = frame
        log.info("Wiegand out %s (%d bits) for event %s", credential, len(bits), event_id)
        return None

    def _send(self, frame: _Frame) -> None:
        with self._lock:
            with self._state:
                if frame.done:  # close() reported it while it waited for the wire: never sent now
                    self._frames.pop(threading.current_thread(), None)
                    return
                stuck = self.stuck is not None and not self._idle()
            waited = time.monotonic() - frame.queued_at
            if stuck:
                failure = _Failure(f"not sent: {self.stuck}")  # idling was just tried: not again
            elif waited > MAX_WAIT_S:
                failure = _Failure(f"not sent: it waited {waited:.1f} s for the wire (more than {MAX_WAIT_S:g} s "
                                   "after its GRANTED: nobody may be at the door any more)")
            else:
                if (failure := self._transmit(frame)) is not None:
                    with self._state:
                        if not self._idle():
                            failure = replace(failure, what=f"{failure.what}; {self.stuck}")
                time.sleep(FRAME_GAP_S)  # the next frame must not run into this one
        with self._state:
            self._frames.pop(threading.current_thread(), None)
            if frame.done:
                return  # close() has said it already
            frame.done = True
            if failure is None:
                self.sent += 1
                return
        self._report(frame, failure)

    def _transmit(self, frame: _Frame) -> _Failure | None:
        """Put the frame on the wire (holding ``_lock``); how it failed, or None."""
        before: list[int] = []  # perf_counter_ns before each bit's write ...
        after: list[int] = []  # ... and after it returned: the edge is somewhere in between
        t0 = time.perf_counter_ns()
        try:
            for p in frame.pulses:
                _wait_until(t0 + p.start_us * 1000)
                with self._state:
                    if frame.done:  # close() has reported it with the bits begun so far: no more go out
                        return _Failure("stopped by close()")
                    frame.started += 1
                line = self._lines[p.line]
                before.append(time.perf_counter_ns())
                line.on()  # active low: "on" pulls the line down
                after.append(time.perf_counter_ns())
                _wait_until(after[-1] + p.width_us * 1000)
                line.off()
        except Exception as exc:  # noqa: BLE001 - a GPIO write failed: the frame broke off
            n = len(after)  # bits whose edge went out (a failed off() leaves its bit sent, the line low)
            return self._broken(f"Wiegand output failed after {n} of {len(frame.bits)} bits: "
                                f"{type(exc).__name__}: {exc}", [frame.bits[:n]], frame)
        gaps = [(after[k + 1] - before[k]) / 1000 for k in range(len(before) - 1)]
        cuts = [k + 1 for k, gap in enumerate(gaps) if gap > self.max_gap_us]
        if not cuts:
            return None
        pieces = [frame.bits[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame.bits)])]
        failure = self._broken(f"Wiegand frame broken: up to {max(gaps) / 1000:.1f} ms between two bits (the limit "
                               f"is {self.max_gap_us / 1000:g} ms; the CPU was busy)", pieces, frame)
        # every bit did go out (in more than one piece, so never WHOLE above), only late, and the gap
        # is measured long: a panel that waits longer than the limit reads the whole credential, so
        # the report must not say it did not get it
        return _Failure(f"{failure.what}; {LATE_WHOLE}", whole=True)

    @staticmethod
    def _broken(what: str, pieces: list[list[int]], frame: _Frame) -> _Failure:
        """``what`` and what the panel may have read from the ``pieces`` that went out: the whole
        credential (every bit went out, only a release failed: WHOLE) or another badge."""
        read = misreads(pieces)
        whole = str(frame.credential) in read and len(pieces) == 1 and len(pieces[0]) == len(frame.bits)
        others = [r for r in read if not (whole and r == str(frame.credential))]
        return _Failure(what + (f"; {WHOLE}" if whole else "")
                        + (f"; the panel may have read {', '.join(others)} instead" if others else ""), whole)

    def _report(self, frame: _Frame, failure: _Failure) -> None:
        got = "" if failure.whole else ": the panel did not get it"  # nor may it say so when it may have
        reason = f"{failure.what} (credential {frame.credential}, event {frame.event_id}){got}"
        log.error("%s", reason)
        try:
            frame.on_failure(reason)
        except Exception:  # noqa: BLE001 - the sender's thread must not die of its report
            log.critical("Wiegand: reporting a failed frame failed (event %s)", frame.event_id, exc_info=True)
        with self._state:
            self.failed += 1

    def _idle_if_free(self) -> bool:
        """``_idle()`` now if no frame is on the wire (under ``_state``); False if one is."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self._idle()
        finally:
            self._lock.release()

    def _idle(self) -> bool:
        """Let both lines idle (under ``_state``, the wire free); False, and ``stuck`` says why, when
        one cannot."""
        for name, line in self._lines.items():
            try:
                line.off()
            except Exception as exc:  # noqa: BLE001 - said on health, refused on the next send
                if self.stuck is None:
                    log.critical("Wiegand %s line cannot be set idle: %s", name, exc)
                self.stuck = f"Wiegand {name} line may be held active ({type(exc).__name__}: {exc})"
                return False
        if self.stuck is not None:
            log.warning("Wiegand lines idle again (they had failed: %s)", self.stuck)
            self.stuck = None
        return True

    def health(self) -> dict[str, Any]:
        """``wiegand_waiting``: frames on the wire or waiting for it (more than one for long: a
        write hangs; at MAX_FRAMES new ones are refused)."""
        with self._state:
            waiting = len(self._frames)
        return {"wiegand_sent": self.sent, "wiegand_failed": self.failed, "wiegand_stuck": self.stuck,
                "wiegand_waiting": waiting}

    @property
    def fault(self) -> str | None:
        """A line that could not be set idle: every frame is refused until it can be."""
        stuck = self.stuck
        return None if stuck is None else f"Wiegand output: {stuck}"

    def close(self) -> None:
        """No new frames; wait up to JOIN_S for the ones on the wire (their failures are still
        reported), report any still there as failed, then let the lines idle and release them."""
        with self._state:
            self._closed = True
            frames = dict(self._frames)
        deadline = time.monotonic() + self.JOIN_S
        for thread in frames:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = []
        with self._state:
            for thread, frame in frames.items():
                if thread.is_alive() and not frame.done:
                    frame.done = True  # from now on not one more bit of it goes out
                    late.append((frame, frame.started))
        for frame, started in late:
            if not started:
                self._report(frame, _Failure(f"Wiegand output stopping: the frame was still waiting for the wire "
                                             f"after {self.JOIN_S:g} s and is not sent"))
                continue
            self._report(frame, self._broken(
                f"Wiegand output stopping: the frame was still on the wire after {self.JOIN_S:g} s "
                f"({started} of {len(frame.bits)} bits begun, no more are sent)", [frame.bits[:started]], frame))
        if not self._lock.acquire(timeout=0.5):
            log.error("Wiegand: a frame is still on the wire at shutdown: the lines are left as they are")
            return
        try:
            with self._state:
                self._idle()
            for line in self._lines.values():
                try:
                    line.close()
                except Exception:  # noqa: BLE001 - shutdown goes on
                    log.exception("Wiegand: closing a line failed")
        finally:
            self._lock.release()


class WiegandGpioOutput(WiegandTransmitter):
    """The transmitter on two gpiozero pins (BCM numbering)."""

    def __init__(self, d0_pin: int, d1_pin: int, width_us: int, interval_us: int) -> None:
        try:
            from gpiozero import DigitalOutputDevice  # type: ignore
        except ImportError as exc:
            raise ConfigError("door.output=wiegand needs gpiozero: pip install 'facelink[pi]'") from exc
        lines = []
        for key, pin in (("d0_pin", d0_pin), ("d1_pin", d1_pin)):
            try:
                lines.append(DigitalOutputDevice(pin, active_high=False, initial_value=False))
            except Exception as exc:  # noqa: BLE001 - gpiozero raises many kinds (no pin factory, busy pin)
                for line in lines:
                    line.close()
                raise ConfigError(f"wiegand.{key}: cannot use GPIO {pin}: {exc}") from None
        super().__init__(lines[0], lines[1], width_us, interval_us)
