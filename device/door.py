"""Door output: what a GRANTED decision does to the lock. Off by default (relay = "none").

A relay reports a failed actuation through ``on_failure(reason)`` (synchronously or from its own
thread); the daemon publishes it as an ``ACTUATION_FAILED`` event that refers to the GRANTED, so
the audit trail never says a door opened that did not. Setup problems (gpiozero missing, no
command) are ``ConfigError``s naming the key: the daemon exits 78.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from facelink.errors import ConfigError, FailureReport, ignore_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndedPulse:
    """A running pulse that ``end_pulse()`` ended before its time (or that ``running_pulse()``
    found running): what it was started for (the ``event_id`` given to ``pulse()``: a GRANTED
    decision's, or the panel opening's record; None when the caller named none). A newer pulse
    supersedes an older one's timer, so it is the newest; ``earlier`` names the older pulses it
    overlapped that were still inside their own ``pulse_s`` (oldest first, those started for
    something named): the lock was held released for them too, so an off ended them as well (a
    GRANTED, then the panel's opening for it or a second GRANTED within ``pulse_s``); ``unnamed``
    counts those it overlapped and ended too but cannot name (more than ``OVERLAPS_KEPT``)."""

    started_for: str | None
    earlier: tuple[str, ...] = ()
    unnamed: int = 0
    #: ``end_pulse`` only: the off did not work (why, as ``stuck`` says): these pulses still hold
    #: the lock released until a retry works (found in the tenth session: such an off was
    #: recorded as if no pulse had run, and the pulses it failed to end went unnamed)
    off_failed: str | None = None


class DoorRelay(Protocol):
    #: True when this relay drives the door's lock; False (NoRelay) when something else does (an
    #: access panel, ``door.output``) or nothing: then a GRANTED the panel did not get opened nothing
    opens_door: bool
    #: why the lock output could not be switched off after a pulse (it may be held released), or
    #: None; the daemon publishes ERROR and says it on health while it is set
    stuck: str | None

    def pulse(self, user_id: str | None, on_failure: FailureReport = ignore_failure, *,
              event_id: str | None = None) -> None:
        """Open the lock for a GRANTED (``user_id``) or the panel's opening (None); ``event_id``
        names the record it carries out (what ``end_pulse`` then says it ended)."""
        ...

    def end_pulse(self) -> EndedPulse | None:
        """Lock now (the access panel switched the door's output off): the running pulse that was
        ended (``off_failed`` set: the off failed, it still runs), or None when none ran or this
        relay cannot end one."""
        ...

    def running_pulse(self) -> EndedPulse | None:
        """The pulse that holds the lock released now and will end at its time (the panel's off
        once the timed operation is done leaves it running), or None: none, or this relay does
        not know (a door command owns its timing)."""
        ...

    def close(self) -> None: ...


class NoRelay:
    opens_door = False
    stuck: str | None = None

    def pulse(self, user_id: str | None, on_failure: FailureReport = ignore_failure, *,
              event_id: str | None = None) -> None:
        return None

    def end_pulse(self) -> EndedPulse | None:
        return None

    def running_pulse(self) -> EndedPulse | None:
        return None

    def close(self) -> None:
        return None


def _stuck(exc: BaseException) -> str:
    """What ``stuck`` (health, the ERROR's reason) says when off() raised."""
    return f"lock output could not be switched off: {type(exc).__name__}: {exc}"[:300]


class PulseSwitch:
    """On now, off ``pulse_s`` after the LATEST pulse. A newer pulse supersedes the older one's
    timer (which then does nothing), and nothing fires after ``close()``.

    Fail closed: an ``on()`` that raises leaves the running pulse's timer as it was (with none
    running, the output is switched off: a write that failed half-way releases nothing), and the
    error goes to the caller (ACTUATION_FAILED); so does a timer that cannot start, after the
    output is switched off (nothing would end that pulse). An ``off()`` that raises is retried every
    ``OFF_RETRY_S`` until it works or ``close()``; ``stuck`` says why meanwhile."""

    OFF_RETRY_S = 0.5
    OVERLAPS_KEPT = 64  # the newest pulses remembered while they overlap (an off names at most these)
    UNNAMED_KEPT = 100_000  # the older ones' deadlines kept to count them (found in review: dropped unsaid)

    def __init__(self, on: Callable[[], None], off: Callable[[], None], pulse_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._on, self._off, self.pulse_s = on, off, pulse_s
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self._timer: threading.Timer | None = None
        # the pulses _timer's period covers, oldest first: (when each one's own pulse_s ends, what
        # it was started for); empty: no timer, or an off() retry's
        self._running: list[tuple[float, str | None]] = []
        # when the pulses of that period dropped from _running (started for something named) end,
        # oldest first: an off counts those still inside their own pulse_s (``EndedPulse.unnamed``)
        self._unnamed: deque[float] = deque(maxlen=self.UNNAMED_KEPT)
        self._closed = False
        self.stuck: str | None = None  # the output could not be switched off: why (None: it is off or pulsing)

    def pulse(self, started_for: str | None = None) -> None:
        """On now, off in ``pulse_s``; ``started_for`` is what ``end()`` says it ended."""
        with self._lock:
            if self._closed:
                raise RuntimeError("relay is closed")
            try:
                self._on()
            except BaseException:
                if self._timer is None:  # no pulse running that would switch it off
                    self._switch_off()
                raise
            self._generation += 1  # only now: the running pulse's timer stands until this one is on
            try:
                self._schedule(self.pulse_s)
            except BaseException:  # no timer would end this pulse (nor the cancelled one): locked now
                self._timer, self._running = None, []
                self._switch_off()
                raise
            now = self._clock()
            running = [p for p in self._running if p[0] > now]
            while self._unnamed and self._unnamed[0] <= now:  # ran their whole time
                self._unnamed.popleft()
            if not self._running:  # a new period: nothing before it is counted again
                self._unnamed.clear()
            keep = len(running) - (self.OVERLAPS_KEPT - 1)
            if keep > 0:  # the oldest go unnamed: counted while inside their own pulse_s
                self._unnamed.extend(until for until, f in running[:keep] if f is not None)
                running = running[keep:]
            running.append((now + self.pulse_s, started_for))
            self._running = running

    def end(self) -> EndedPulse | None:
        """Switch the output off now, before its time (the running pulse's timer then does
        nothing): the running pulse that was ended (None: none ran), or, when the off() failed
        and is retried (``stuck``), the pulses it did not end, ``off_failed`` saying why. While an
        earlier off() is retried, the off is tried again now: None when it works, else an
        ``EndedPulse(None, off_failed=...)`` (the lock is still held released)."""
        with self._lock:
            # nothing running, or only an off() retry (a newer pulse's timer replaces the retry:
            # that pulse is ended here, whatever an earlier off() left in ``stuck``)
            running = self._running_pulse()
            if not self._closed and self._timer is not None and running is None and self.stuck is not None:
                # only an earlier off()'s retry is pending: the lock is still held released (found
                # in review 88: this off was recorded not_ended, "no pulse ran"). Tried again now;
                # still failing, it says so (the pulses were named by the off that failed first)
                self._generation += 1
                self._timer.cancel()
                self._timer = None
                self._switch_off()
                return None if self.stuck is None else EndedPulse(None, off_failed=self.stuck)
            if self._closed or self._timer is None or running is None:
                return None
            self._generation += 1
            self._timer.cancel()
            self._timer, self._running = None, []
            self._switch_off()
            return running if self.stuck is None else replace(running, off_failed=self.stuck)  # retried

    def running(self) -> EndedPulse | None:
        """The pulse running now, left to end at its time (None: none, or only an off() retry)."""
        with self._lock:
            return None if self._closed or self._timer is None else self._running_pulse()

    def _running_pulse(self) -> EndedPulse | None:
        """The newest running pulse, with the older ones still inside their own ``pulse_s`` (those
        whose time had passed ran it whole: an off now does not cut them short). Under the lock."""
        if not self._running:
            return None
        now = self._clock()
        *older, (_, newest) = self._running
        return EndedPulse(newest, tuple(f for until, f in older if until > now and f is not None),
                          sum(1 for until in self._unnamed if until > now))

    def _schedule(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(delay_s, self._expire, args=(self._generation,))
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, generation: int) -> None:
        with self._lock:
            if self._closed or generation != self._generation:
                return  # superseded by a later pulse, or closed
            self._timer, self._running = None, []
            self._switch_off()

    def _switch_off(self) -> None:
        """Switch the output off (under the lock); when that fails, try again in OFF_RETRY_S."""
        try:
            self._off()
        except Exception as exc:  # noqa: BLE001 - the lock may be held released: retried, said on health
            first = self.stuck is None
            self.stuck = _stuck(exc)
            if first:
                log.critical("door relay: %s (retrying every %.1f s)", self.stuck, self.OFF_RETRY_S)
            self._running = []
            self._schedule(self.OFF_RETRY_S)
            return
        if self.stuck is not None:
            log.warning("door relay: lock output switched off again (it had failed: %s)", self.stuck)
            self.stuck = None

    CLOSE_TRIES = 5  # close(): off() is tried this many times, OFF_RETRY_S / 5 apart

    def close(self) -> None:
        """Switch the output off and stop; an off() that keeps failing is tried CLOSE_TRIES times,
        then said (CRITICAL, ``stuck``) and not raised: the caller's shutdown goes on."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for attempt in range(self.CLOSE_TRIES):
                try:
                    self._off()
                    self.stuck = None
                    return
                except Exception as exc:  # noqa: BLE001 - retried, then said
                    self.stuck = _stuck(exc)
                    if attempt + 1 < self.CLOSE_TRIES:
                        time.sleep(self.OFF_RETRY_S / 5)
            log.critical("door relay: %s at shutdown (%d tries): the lock may be held released until the "
                         "GPIO is reset", self.stuck, self.CLOSE_TRIES)


class GpioRelay:
    """Energise a relay on a GPIO pin for ``pulse_s`` (gpiozero, Raspberry Pi)."""

    opens_door = True

    def __init__(self, pin: int, pulse_s: float) -> None:
        try:
            from gpiozero import OutputDevice  # type: ignore
        except ImportError:
            raise ConfigError("door.relay = \"gpio\" needs gpiozero: pip install 'facelink[pi]'") from None
        try:
            self._dev = OutputDevice(pin, active_high=True, initial_value=False)
        except Exception as exc:  # noqa: BLE001 - gpiozero raises many kinds (no pin factory, busy pin)
            raise ConfigError(f"door.gpio_pin: cannot use GPIO {pin}: {exc}") from None
        self._switch = PulseSwitch(self._dev.on, self._dev.off, pulse_s)

    @property
    def stuck(self) -> str | None:
        return self._switch.stuck

    def pulse(self, user_id: str | None, on_failure: FailureReport = ignore_failure, *,
              event_id: str | None = None) -> None:
        try:
            self._switch.pulse(event_id)
        except Exception as exc:  # noqa: BLE001 - reported as ACTUATION_FAILED
            on_failure(f"gpio: {type(exc).__name__}: {exc}")

    def end_pulse(self) -> EndedPulse | None:
        return self._switch.end()

    def running_pulse(self) -> EndedPulse | None:
        return self._switch.running()

    def close(self) -> None:
        try:
            self._switch.close()
        finally:
            self._dev.close()  # gpiozero releases the pin (an input again: the relay drops)


class CommandRelay:
    """Run a command on GRANTED (FACELINK_USER_ID in its environment); never blocks the pipeline.
    A command that fails, times out or cannot start is reported through ``on_failure``. The
    command owns its lock's timing; one that started and then failed or was stopped may have left
    the lock released: ``stuck`` says so (health's ``relay_stuck``, ERROR every 30 s) until a later
    command runs through (exit 0).

    The command runs in a process group of its own: one that has not finished within
    ``timeout_s + grace_s`` is stopped with everything it started (a shell's children too, which
    killing the shell alone would leave running). A command that started and then failed or was
    stopped may have released the lock before it did, and perhaps not locked it again: its
    failure says so (the audit trail must not say the door stayed shut)."""

    opens_door = True

    def __init__(self, command: str, timeout_s: float, grace_s: float = 10.0) -> None:
        if not command.strip():
            raise ConfigError("door.command: required when door.relay = \"command\"")
        self._command = command
        self._timeout = timeout_s + grace_s
        self._lock = threading.Lock()
        self._running: set[threading.Thread] = set()
        self._closed = False
        self.stuck: str | None = None  # the last command that started failed: the lock may be released

    def pulse(self, user_id: str | None, on_failure: FailureReport = ignore_failure, *,
              event_id: str | None = None) -> None:
        env = {**os.environ, "FACELINK_USER_ID": user_id or ""}

        def run() -> None:
            try:
                self._run(env, on_failure)
            finally:
                with self._lock:
                    self._running.discard(threading.current_thread())

        with self._lock:
            if self._closed:
                on_failure("relay is closed")
                return
            thread = threading.Thread(target=run, name="door-command", daemon=True)
            thread.start()  # first: one that cannot start raises to the caller, and close() never joins it
            self._running.add(thread)  # (run() discards it under this lock: after this)

    def _run(self, env: dict[str, str], on_failure: FailureReport) -> None:
        try:
            proc = subprocess.Popen(self._command, shell=True, env=env, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # its own process group: stopped whole
        except (subprocess.SubprocessError, OSError) as exc:
            self._failed(on_failure, f"door command could not run: {exc}")
            return
        try:
            code = proc.wait(self._timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:  # it ended meanwhile
                pass
            proc.wait()
            self._failed(on_failure, f"door command did not finish within {self._timeout:g} s and was stopped with "
                                     "everything it started: it may have released the lock and not locked it "
                                     "again, check the door", started=True)
            return
        if code != 0:
            self._failed(on_failure, f"door command exited with {code}: it ran, so it may have released the "
                                     "lock before it failed", started=True)
            return
        with self._lock:
            if self.stuck is not None:
                log.warning("door command ran through again: the earlier failure (%s) is cleared", self.stuck)
            self.stuck = None

    def _failed(self, on_failure: FailureReport, reason: str, started: bool = False) -> None:
        """``started``: the command ran, so the lock may be left released (``stuck``)."""
        log.error("%s", reason)
        if started:
            with self._lock:
                self.stuck = reason[:300]
        on_failure(reason)

    def end_pulse(self) -> EndedPulse | None:
        """A command owns its lock's timing: it cannot be ended from here."""
        return None

    def running_pulse(self) -> EndedPulse | None:
        """A command owns its lock's timing: whether it holds the lock released is not known here."""
        return None

    def close(self) -> None:
        """No new commands; wait for running ones so their failures are still reported."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for thread in running:
            thread.join(self._timeout + 1)


def make_relay(door: Any) -> DoorRelay:
    if door.relay == "gpio":
        return GpioRelay(door.gpio_pin, door.pulse_s)
    if door.relay == "command":
        return CommandRelay(door.command, door.pulse_s)
    return NoRelay()
