"""The door as an OSDP Peripheral Device (a card reader) on an access panel's RS-485 line.

GRANTED -> a CardRead event carrying the user's Wiegand credential, so the panel applies its own
access levels and schedules. Unknown faces send nothing; the same credential is not sent again
within ``debounce_s``. The panel's LED, buzzer, text and output commands are logged and kept as
state; output 0 (the only one this reader declares: libosdp NAKs any other) switched on goes
to ``on_output`` (a ``PanelOutput``: the door records the opening, then drives its relay), and so
does it switched off (at once, control codes 1 and 6, or once the running timed operation is
done, 3: the door records what it ended or left running). The
panel's verdict (a temporary green LED or the output on: GRANTED; a temporary red LED: DENIED;
nothing within ``verdict_timeout_s``: NO_RESPONSE) is handed to
``on_verdict`` next to the decision it answers; which read a command answers is decided by
``osdp_verdicts.VerdictBook``.

Secure channel: always on. With an SCBK file (mode 0600) the PD refuses a plaintext panel
(EnforceSecure). Without one, ``install_mode = true`` lets the panel set up the channel with the
default install key once and then send the site key (KEYSET), which is written to the file;
until then no card read is sent and no command obeyed, and then libosdp is started again with
the key and EnforceSecure (tried again after a back-off while that fails; ``osdp_provisioning``
owns the stages). ``install_mode = false`` without a key is a configuration error.

libosdp is pinned to 3.2.9 (its 4.x API changes); never install the separate ``osdp`` package,
which claims the same import name.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelink.errors import ConfigError

from .handover import HandOver
from .osdp_provisioning import RETRY_AFTER_S, Provisioning, Stage
from .osdp_verdicts import CardRead, PanelOutput, PanelVerdict, VerdictBook
from .scbk import load_scbk, save_scbk
from .serial_port import open_raw, read_available
from .wiegand import Credential, pack

log = logging.getLogger(__name__)

OUTPUT_ON = {2, 4, 5}  # OSDP output control codes that switch an output on (permanent, timed)
# ... and those that switch it off now, a timed operation aborted (1: permanent off; 6: temporary
# off); 3 (permanent off once the timed operation is done) lets a running pulse end at its time
# (0 is a no-op: it does not alter the output)
OUTPUT_OFF_NOW = {1, 6}
OUTPUT_OFF_AFTER = {3}
LED_GREEN, LED_RED = 2, 1
LED_SET_TEMPORARY = 2  # an LED command's temporary control code that shows a colour (1 cancels)


_REPLIES = {0: (0, None), -1: (-1, None)}


def _reply(code: int) -> tuple[int, None]:
    """What a command callback returns to libosdp. libosdp 3.2.9's binding (pd_command_cb)
    releases the returned tuple's second item instead of the tuple: each panel command would
    cost None a reference until CPython aborts ("deallocating None"). None is given that
    reference first; the tuple the binding keeps is a shared constant, so nothing leaks. (With
    a fixed binding None's count would rise by one a command, without limit but harmlessly on
    a 64-bit count; from Python 3.12 None is immortal and nothing is needed.)"""
    reply = _REPLIES[code]
    if sys.version_info < (3, 12):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(None))
    return reply


def _osdp() -> Any:
    try:
        import osdp  # libosdp==3.2.9
    except ImportError as exc:
        raise ConfigError("door.output=osdp needs libosdp: pip install 'libosdp==3.2.9'") from exc
    if not hasattr(osdp, "PeripheralDevice"):
        raise ConfigError("the installed `osdp` module is not libosdp's: pip uninstall osdp, "
                          "pip install 'libosdp==3.2.9'")
    return osdp


def _channel_class(osdp: Any) -> type:
    class FdChannel(osdp.Channel):
        def __init__(self, fd: int) -> None:
            super().__init__()
            self.fd = fd

        def read(self, max_bytes: int) -> bytes:
            try:
                return read_available(self.fd, max_bytes)
            except OSError:
                return b""

        def write(self, buf: bytes) -> int:
            try:
                return os.write(self.fd, bytes(buf))
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError:
                return -1

        def flush(self) -> None:
            return None

    return FdChannel


@dataclass
class PanelState:
    """What the panel last asked of this reader (logged, and on the health topic)."""

    led: dict[str, Any] | None = None
    buzzer: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    text: str | None = None
    commands: int = 0
    card_reads: int = 0
    verdicts: deque = field(default_factory=lambda: deque(maxlen=100))


class OsdpReader:
    """A libosdp PeripheralDevice on ``device`` (a serial path) at ``address``.

    Threads, and the one rule that keeps them from deadlocking: libosdp's own thread holds
    libosdp's lock while it calls back into FaceLink (a panel command, an event delivered), so
    those callbacks take no FaceLink lock and call nothing that might wait: they hand what came
    to the verdict thread (``osdp-verdicts``), which owns the open card reads (a ``VerdictBook``:
    which read a command answers) and flushes stale ones; the verdicts it closes go to the recorder thread (``osdp-record``), the only one to call
    ``on_verdict``, and the openings the panel commands go to the output thread (``osdp-output``),
    the only one to call ``on_output`` (the door records the opening, then drives its relay): so a
    slow outbox commit holds up neither a flush nor expiry, only the door's output, which waits
    for its record by design.
    ``card_read`` (the pipeline) calls libosdp holding only its send lock, which no callback takes.
    Locks are always taken in one order: the send lock, then libosdp's. The verdict thread also
    starts libosdp again after an install-mode KEYSET (``_enforce``, and again after a back-off
    while that fails: ``osdp_provisioning``), holding the send lock while libosdp's thread ends:
    a card read waits for that (~20 ms; longer only if a callback hangs).
    """

    def __init__(self, device: str, *, address: int, baud: int, scbk_file: Path, install_mode: bool,
                 debounce_s: float = 3.0, verdict_timeout_s: float = 2.0,
                 on_verdict: Callable[[PanelVerdict], None] | None = None,
                 on_output: Callable[[PanelOutput], None] | None = None,
                 restart_retry_s: tuple[float, ...] = RETRY_AFTER_S) -> None:
        osdp = _osdp()
        self._osdp = osdp
        self.scbk_file = Path(scbk_file)
        key = load_scbk(self.scbk_file)
        if key is None and not install_mode:
            raise ConfigError(f"no OSDP key in {self.scbk_file}: provision it (0600, 32 hex digits) "
                              "or set osdp.install_mode = true for first provisioning")
        # libosdp's flags are fixed when it starts and it refuses InstallMode with EnforceSecure:
        # until it runs again with the panel's key (``_enforce``) nothing leaves and nothing is obeyed
        self.provisioning = Provisioning.at_start(key, restart_retry_s)
        self.debounce_s, self.verdict_timeout_s = debounce_s, verdict_timeout_s
        self.on_verdict, self.on_output = on_verdict, on_output
        self.state = PanelState()
        self._send_lock = threading.Lock()  # card_read and close; never taken by libosdp's thread
        self._closing = False  # close() began: no new card reads
        self._closed = False  # the PD is torn down: offline
        self._last_sent: dict[str, float] = {}
        self._seq = 0  # card reads handed to libosdp, numbered under the send lock
        # what libosdp's event queue may still hold, in its order (send lock): a flush re-sends from it
        self._handed: deque[tuple[CardRead, dict[str, Any]]] = deque(maxlen=64)
        self._dropped: list[bytes] | None = None  # while we flush libosdp: the events it reports dropped
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()  # -> verdict thread
        # the verdict thread hands on: verdicts to record (on_verdict), openings to carry out (on_output)
        self._recorder = HandOver[PanelVerdict]("osdp-record", self._record, "cannot record the panel's verdict")
        self._outputs = HandOver[PanelOutput]("osdp-output", self._output,
                                              "OSDP: cannot drive the door's relay for the panel's output command")
        self._reads_done = threading.Event()  # stopping, and no card read is open any more
        self._close_done = threading.Event()  # the first close() has finished
        self._command_came = threading.Event()  # set by each panel command (close() settles on it)
        self._address, self._name = address, f"facelink-{address}"
        self._fd = open_raw(device, baud)
        try:
            self._pd = self._start_pd(key)
        except Exception:
            os.close(self._fd)
            raise
        self._verdicts = threading.Thread(target=self._verdict_loop, name="osdp-verdicts", daemon=True)
        self._verdicts.start()
        self._recorder.start()
        self._outputs.start()
        log.info("OSDP PD %d on %s (%s)", address, device,
                 "secure channel" if self.provisioning.enforced else "install mode: waiting for the panel's key")

    def _start_pd(self, key: bytes | None) -> Any:
        """libosdp's PD on the line: in install mode without a key, else enforcing the secure
        channel with it. Nothing is left running when it fails."""
        osdp = self._osdp
        flags = [osdp.LibFlag.InstallMode] if key is None else [osdp.LibFlag.EnforceSecure]
        info = osdp.PDInfo(self._address, _channel_class(osdp)(self._fd), scbk=key, flags=flags,
                           name=self._name)
        caps = osdp.PDCapabilities([
            (osdp.Capability.CardDataFormat, 1, 1), (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1), (osdp.Capability.OutputControl, 1, 1),
            (osdp.Capability.TextOutput, 1, 1), (osdp.Capability.CommunicationSecurity, 1, 1)])
        pd = osdp.PeripheralDevice(info, caps, log_level=osdp.LogLevel.Warning,
                                   event_completion_handler=self._on_event_done)
        # straight on libosdp's context: the wrapper's own handler also queues a copy of every
        # command for get_command(), which nobody here reads
        pd.ctx.set_command_callback(self._on_command)
        try:
            pd.start()
        except Exception:
            if pd.thread is not None:
                pd.teardown()
            raise
        return pd

    def _stop_pd(self) -> None:
        """Stop libosdp (send lock held); a PD already stopped is left alone."""
        if self._pd.thread is not None:
            self._pd.teardown()
        self._pd.ctx = None

    def _enforce(self) -> None:
        """The panel's key is written: libosdp starts again with it and EnforceSecure (its flags
        are fixed at start), so that from now on libosdp itself answers nothing in plaintext --
        not even a poll for a card read -- and the panel sets the channel up again with its key.
        Verdict thread. If libosdp cannot start again the reader stays down, saying why
        (``fault``), and this is called again after the provisioning's back-off."""
        prov = self.provisioning
        with self._send_lock:
            if self._closing:  # it stays down, and no restart is due any more (no busy loop)
                prov.stop_retrying()
                return
            if prov.stage is not Stage.KEY_SAVED:
                return
            try:
                self._stop_pd()  # libosdp's thread is gone: no KEYSET changes the key from here on
                self._pd = self._start_pd(prov.panel_key)
            except Exception as exc:  # noqa: BLE001 - the door runs on, sending the panel nothing
                if prov.restart_failures == 0:  # the traceback once; then a line per retry (every 30 s)
                    log.exception("OSDP: cannot start the reader again with the panel's key")
                prov.restart_failed(f"{type(exc).__name__}: {exc}", time.monotonic())
                if prov.restart_failures > 1:
                    log.error("OSDP: %s", prov.restart_error)
                return
            prov.restarted()
        log.info("OSDP: reader started again with the panel's key, secure channel enforced")

    # -- FaceLink -> panel -----------------------------------------------------------------
    def card_read(self, credential: Credential, event_id: str) -> bool:
        """Send a CardRead for ``credential``; False when debounced, stopping or refused by libosdp."""
        return self.send_card(credential, event_id) is None

    def send_card(self, credential: Credential, event_id: str) -> str | None:
        """Send a CardRead for ``credential``; why it was not (debounced, stopping, refused by
        libosdp), or None."""
        key = str(credential)
        bits = credential.bits()
        data = pack(bits)
        event = {"event": self._osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                 "format": self._osdp.CardFormat.Wiegand, "length": len(bits), "data": data}
        with self._send_lock:
            now = time.monotonic()
            if self._closing:
                log.warning("OSDP: reader stopping, card read for event %s not sent", event_id)
                return "the reader is stopping: the card read was not sent"
            if not self.provisioning.enforced:  # libosdp would answer a poll in plaintext, or the key is the
                # published install key: nothing leaves before the reader runs with the panel's key
                log.warning("OSDP: the reader is not provisioned, card read for event %s not sent", event_id)
                if self.fault is not None:
                    return self.fault
                if self.provisioning.stage is Stage.KEY_SAVED:
                    return ("the reader is starting again with the panel's key: the card read was not "
                            "sent")
                return "the reader has no secure channel key from the panel yet (install mode): the card read was not sent"
            ago = now - self._last_sent.get(key, -1e9)
            if ago < self.debounce_s:
                log.info("OSDP: %s sent %.1f s ago, not repeated", key, ago)
                return (f"the same card was sent {ago:.1f} s ago and is not sent again within "
                        f"osdp.debounce_s ({self.debounce_s:g} s)")
            self._last_sent = {k: t for k, t in self._last_sent.items() if now - t < self.debounce_s}
            self._seq += 1
            read = CardRead(event_id, key, bytes(data), now, now + self.verdict_timeout_s, seq=self._seq)
            self._inbox.put(("read", read))  # before libosdp can report it delivered
            try:
                ok = bool(self._pd.submit_event(event))
            except Exception:  # noqa: BLE001 - the read was not taken: say so, the door stays as it is
                log.exception("OSDP: libosdp failed to take the card read for event %s", event_id)
                ok = False
            if ok:
                self._last_sent[key] = now
                self._handed.append((read, event))
                self.state.card_reads += 1
            else:
                self._inbox.put(("refused", read))
        log.info("OSDP CardRead %s (%d bits) for event %s: %s", key, len(bits), event_id,
                 "queued" if ok else "refused by libosdp")
        return None if ok else "libosdp refused the card read (its event queue is full or it failed)"

    @property
    def secure(self) -> bool:
        ctx = self._pd.ctx  # None once torn down (health may ask while close() runs)
        return not self._closed and ctx is not None and bool(ctx.is_sc_active())

    @property
    def fault(self) -> str | None:
        """Why the reader sends nothing while the door runs (health's ``osdp_fault``): libosdp did
        not start again with the panel's key (yet), or the panel's key was refused; None otherwise."""
        return self.provisioning.fault

    @property
    def provisioned(self) -> bool:
        """libosdp runs with the panel's key and enforces the secure channel (a key file at start,
        or the panel's KEYSET and a restart of libosdp since)."""
        return self.provisioning.enforced

    @property
    def online(self) -> bool:
        ctx = self._pd.ctx
        return not self._closed and ctx is not None and bool(ctx.is_online())

    # -- panel -> FaceLink: libosdp's thread holding libosdp's lock, or (event completions of a
    # flush or a teardown) the verdict or closing thread holding the send lock too: so these
    # take no FaceLink lock at all, or they would deadlock with themselves --------------------
    def _on_command(self, cmd: dict[str, Any]) -> tuple[int, None]:
        try:  # nothing may escape into libosdp: its binding crashes the process on an exception
            self.state.commands += 1
            self._command_came.set()
            keyset = cmd.get("command") == self._osdp.Command.Keyset
            prov = self.provisioning
            if not prov.enforced and not keyset:  # install mode: a plaintext panel, or anyone with the
                # published install key, must not drive the door's relay (libosdp itself refuses a
                # plaintext KEYSET); the panel's commands count once the reader runs with its key
                log.warning("OSDP: a command before the panel's key refused: %s", cmd.get("command"))
                return _reply(-1)
            if not keyset:
                self._inbox.put(("command", (dict(cmd), time.monotonic())))
                return _reply(0)
            try:  # the panel must know whether the key was kept: a NAK if it was not
                save_scbk(self.scbk_file, bytes(cmd["data"]))
            except Exception as exc:  # noqa: BLE001
                log.exception("OSDP: cannot write the panel's secure channel key to %s", self.scbk_file)
                prov.key_refused(f"the panel's secure channel key was refused: {exc}")
                return _reply(-1)
            if prov.enforced:
                log.warning("OSDP: the panel changed the secure channel key")
            if prov.key_written(bytes(cmd["data"])):  # libosdp cannot be restarted from its own
                self._inbox.put(("enforce", None))  # thread: the verdict thread does it
            log.info("OSDP: secure channel key received from the panel and written to %s", self.scbk_file)
            return _reply(0)
        except BaseException:  # noqa: BLE001 - a NAK, and the reader goes on
            log.exception("OSDP: cannot take the panel's command")
            return _reply(-1)

    def _on_event_done(self, event: dict[str, Any], status: int) -> None:
        dropped = self._dropped
        if dropped is not None:  # our own flush (this thread, both locks held): _flush accounts for it
            dropped.append(bytes(event.get("data", b"")))
            return
        self._inbox.put(("delivered", (bytes(event.get("data", b"")), status, time.monotonic())))

    # -- the verdict thread: owns the open card reads --------------------------------------
    def _verdict_loop(self) -> None:
        try:
            self._decide_verdicts()
        finally:  # its last hand-over: each ends once every item before it is handled
            self._recorder.finish()
            self._outputs.finish()

    def _decide_verdicts(self) -> None:
        book = VerdictBook(self.verdict_timeout_s)
        stopping = halting = False
        while True:
            deadline = book.next_deadline()
            retry_at = self.provisioning.retry_at  # a restart with the panel's key to try again
            if retry_at is not None and (deadline is None or retry_at < deadline):
                deadline = retry_at
            try:
                if halting:  # libosdp is gone: handle what it acknowledged, then end
                    kind, body = self._inbox.get_nowait()
                else:
                    kind, body = self._inbox.get(
                        timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if halting:  # what is still open gets no answer now (libosdp is gone: no flush)
                    for verdict in book.expire(time.monotonic())[0] + book.stop():
                        self._recorder.put(verdict)
                    return
                kind, body = "tick", deadline  # nothing came by the deadline
            closed: list[PanelVerdict] = []
            try:
                # Expiry runs on the time things happened, not on when this thread gets to them
                # (it may have been stuck in on_verdict): first what expired before this happened.
                if kind in ("delivered", "command", "tick"):
                    closed += self._expire(book, body if kind == "tick" else body[-1])
                if kind == "read":
                    closed += book.sent(body)
                elif kind == "refused":
                    book.refused(body)
                elif kind == "delivered":
                    closed += book.delivered(*body)
                elif kind == "command":
                    closed += self._command(book, *body)
                elif kind == "stop":
                    stopping = True
                elif kind == "halt":
                    halting = True
                elif kind == "enforce":
                    self._enforce()
                if kind != "enforce" and self.provisioning.retry_due(time.monotonic()):
                    self._enforce()  # (checked whatever came: a busy inbox must not put it off)
            except Exception:  # noqa: BLE001 - a bad command must never stop the reader
                log.exception("OSDP: cannot handle %s", kind)
            for verdict in closed:
                self._recorder.put(verdict)  # recorded on its own thread: a slow disk delays no flush
            if stopping and not book.open:
                self._reads_done.set()

    def _expire(self, book: VerdictBook, now: float) -> list[PanelVerdict]:
        expired, undelivered = book.expire(now)
        return expired + (self._flush(book, now) if undelivered else [])

    def _flush(self, book: VerdictBook, now: float) -> list[PanelVerdict]:
        """A read the panel never polled timed out: it must not reach the panel later, when
        nobody is at the door. libosdp can only empty its whole event queue, so the reads in it
        that are still inside their window are handed to it again, in the same order, before
        anything else can be (the send lock); the others in it close."""
        with self._send_lock:
            if self._closed or self._pd.ctx is None:  # libosdp is torn down: nothing is sent any
                return []  # more, what is open expires
            with self._pd.lock:  # libosdp's thread is out: only this flush can report events now
                self._dropped = []
                try:
                    self._pd.ctx.flush_events()  # reports each dropped event, here and now
                finally:
                    dropped, self._dropped = self._dropped, None
                gone, requeued = self._requeue(dropped, max(now, time.monotonic()))
        log.warning("OSDP: the panel did not poll %d card read(s) in time: dropped, not sent later; "
                    "%d newer one(s) still in their window handed to libosdp again", len(gone), requeued)
        return book.flushed(frozenset(gone))

    def _requeue(self, dropped: list[bytes], cutoff: float) -> tuple[list[int], int]:
        """Hand libosdp again the reads it just dropped (``dropped``: their data, in its queue's
        order) whose verdict window is still open after ``cutoff`` (never earlier than the
        expiry that caused the flush: what the book closed is never sent again); the numbers of
        the reads gone for good, and how many went back. Send lock and libosdp's lock held.
        Afterwards ``_handed`` is exactly what libosdp holds; on any doubt nothing is sent again
        (libosdp's queue has no limit; more than ``_handed`` keeps is such a doubt)."""
        handed = list(self._handed)
        self._handed.clear()
        tail = handed[len(handed) - len(dropped):] if len(dropped) <= len(handed) else None
        if tail is None or [read.data for read, _ in tail] != dropped:
            log.error("OSDP: cannot tell which card reads libosdp dropped: none handed to it again")
            return [read.seq for read, _ in handed], 0
        gone: list[int] = []
        for read, event in tail:
            ok = False
            if read.deadline > cutoff:
                try:
                    ok = bool(self._pd.ctx.submit_event(event))
                except Exception:  # noqa: BLE001 - not sent again: it closes NO_RESPONSE
                    log.exception("OSDP: libosdp failed to take card read %s again", read.event_id)
            if ok:
                self._handed.append((read, event))
            else:
                gone.append(read.seq)
        return gone, len(self._handed)

    def _command(self, book: VerdictBook, cmd: dict[str, Any], received_at: float) -> list[PanelVerdict]:
        C = self._osdp.Command
        kind = cmd.get("command")
        verdict = None
        if kind == C.LED:
            self.state.led = cmd
            log.info("OSDP panel LED: on_color=%s off_color=%s control=%s temporary=%s",
                     cmd.get("on_color"), cmd.get("off_color"), cmd.get("control_code"), cmd.get("temporary"))
            # a permanent setting is the panel's idle colour, a cancel ends a temporary one: no answer
            if cmd.get("temporary") and cmd.get("control_code") == LED_SET_TEMPORARY:
                verdict = {LED_GREEN: "GRANTED", LED_RED: "DENIED"}.get(cmd.get("on_color"))
        elif kind == C.Buzzer:
            self.state.buzzer = cmd
            log.info("OSDP panel buzzer: control=%s on=%s off=%s repeat=%s", cmd.get("control_code"),
                     cmd.get("on_count"), cmd.get("off_count"), cmd.get("rep_count"))
        elif kind == C.Output:
            self.state.output = cmd
            on = cmd.get("control_code") in OUTPUT_ON
            log.info("OSDP panel output %s: control=%s (%s) timer=%s", cmd.get("output_no"),
                     cmd.get("control_code"), "on" if on else "off", cmd.get("timer_count"))
            if on:  # output 0, the door: libosdp NAKs any other (this reader declares one output)
                return self._output_on(book, cmd, received_at)
            code = cmd.get("control_code")
            if code in OUTPUT_OFF_NOW | OUTPUT_OFF_AFTER and self.on_output is not None:  # in order with the openings
                self._outputs.put(PanelOutput(dict(cmd), None, opens=False, now=code in OUTPUT_OFF_NOW))
        elif kind == C.Text:
            self.state.text = str(cmd.get("data", ""))
            log.info("OSDP panel text: %r", self.state.text)
        else:
            log.info("OSDP panel command %s ignored", kind)
        if verdict is None:
            return []
        answered = book.answer(verdict, cmd, received_at)
        if answered is None:
            log.info("OSDP panel %s with no polled card read waiting for it: not a verdict", verdict)
            return []
        return [answered]

    def _output_on(self, book: VerdictBook, cmd: dict[str, Any], received_at: float) -> list[PanelVerdict]:
        """The panel opens the door: a GRANTED verdict on the newest polled read, if one is open,
        then ``on_output`` (the door records the opening, then drives its relay) with the read
        the opening most likely carries out (``PanelOutput.likely_for``)."""
        answered = book.answer("GRANTED", cmd, received_at)
        if answered is None:
            log.info("OSDP panel GRANTED with no polled card read waiting for it: not a verdict")
        if self.on_output is not None:  # on its own thread: a slow outbox holds up no expiry or flush
            self._outputs.put(PanelOutput(dict(cmd), book.polled_recently(received_at)))
        return [] if answered is None else [answered]

    def _output(self, output: PanelOutput) -> None:
        """The output thread (``osdp-output``): an opening the panel commanded, to ``on_output``
        (the door records it, then drives its relay): a slow outbox commit holds up only the
        door's output -- which waits for its record by design -- never expiry or flushes."""
        self.on_output(output)  # type: ignore[misc]

    def _record(self, v: PanelVerdict) -> None:
        """The recorder thread (``osdp-record``): a verdict, to ``on_verdict`` (an outbox commit)."""
        self.state.verdicts.append(v)
        log.info("OSDP panel verdict for event %s (%s): %s", v.decision_event_id, v.credential, v.verdict)
        if self.on_verdict is not None:
            self.on_verdict(v)

    def close(self, settle_s: float = 0.5) -> None:
        """Stop the reader. Open card reads first get the time left of their verdict window
        (the PD keeps running meanwhile, so the panel's answer is still taken); then the line
        stays up until the panel has been quiet for ``settle_s`` (a panel grants with a green
        LED and then an output command), at most ``verdict_timeout_s`` more; then libosdp stops
        and every command it acknowledged is handled, every opening handed to ``on_output`` and
        every verdict to ``on_verdict``, before this returns (as long as the recorder keeps making progress).
        A second call waits for the first, and for the reader's threads. Called from
        ``on_verdict`` or ``on_output``, it returns once libosdp is down and the reader's own
        threads finish the rest; from ``on_output`` it does not wait out other reads' windows
        (only the verdict thread could say they are done), so those close NO_RESPONSE
        (``reader_stopped``)."""
        me = threading.current_thread()
        own = me is self._verdicts or self._recorder.running_here() or self._outputs.running_here()
        with self._send_lock:
            first = not self._closing
            self._closing = True
        if not first:
            if not own:  # (from a callback it would wait on itself)
                self._close_done.wait(3 * self.verdict_timeout_s + settle_s + 20.0)
                self._await_threads()  # a first close() from a callback did not
            return
        try:
            self._inbox.put(("stop", None))
            if me is not self._verdicts and not self._outputs.running_here():  # (the verdict thread alone can
                # say the reads are done; from on_output, a read still open would wait its window out)
                self._reads_done.wait(self.verdict_timeout_s + 5.0)
            quiet_by = time.monotonic() + self.verdict_timeout_s
            while time.monotonic() < quiet_by:
                self._command_came.clear()
                if not self._command_came.wait(settle_s):
                    break
            try:
                with self._send_lock:  # a _flush in progress finishes first, none starts after
                    self._closed = True
                    self._stop_pd()
            finally:
                os.close(self._fd)
                self._inbox.put(("halt", None))
        finally:
            if not own:
                self._await_threads()
            self._close_done.set()

    def _await_threads(self) -> None:
        """The verdict thread, then the output and recorder threads for as long as each makes
        progress: every opening goes to ``on_output`` and every verdict to ``on_verdict`` unless
        one call stalls longer than a wait."""
        wait_s = self.verdict_timeout_s + 5.0
        self._verdicts.join(wait_s)
        if self._verdicts.is_alive():
            log.error("OSDP: the verdict thread did not finish")
        if not self._outputs.wait_done(wait_s):
            log.error("OSDP: the output thread did not finish (on_output stuck?)")
        if not self._recorder.wait_done(wait_s):
            log.error("OSDP: the recorder thread did not finish (on_verdict stuck?)")
