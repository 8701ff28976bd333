"""The door as an OSDP Peripheral Device (a card reader) on an access panel's RS-485 line.

GRANTED -> a CardRead event carrying the user's Wiegand credential, so the panel applies its own
access levels and schedules. Unknown faces send nothing; the same credential is not sent again
within ``debounce_s``. The panel's LED, buzzer, text and output commands are logged and kept as
state; an output switched on drives the door's relay. The panel's verdict (green LED or output on:
GRANTED; red LED: DENIED; nothing within ``verdict_timeout_s``: NO_RESPONSE) is handed to
``on_verdict`` next to the decision it answers.

Secure channel: always on. With an SCBK file (mode 0600) the PD refuses a plaintext panel
(EnforceSecure). Without one, ``install_mode = true`` lets the panel set up the channel with the
default install key once and then send the site key (KEYSET), which is written to the file;
``install_mode = false`` without a key is a configuration error.

libosdp is pinned to 3.2.9 (its 4.x API changes); never install the separate ``osdp`` package,
which claims the same import name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelink.errors import ConfigError

from .scbk import load_scbk, save_scbk
from .serial_port import open_raw, read_available
from .wiegand import Credential, pack

log = logging.getLogger(__name__)

OUTPUT_ON = {2, 4, 5}  # OSDP output control codes that switch an output on (permanent, timed)
LED_GREEN, LED_RED = 2, 1


def _osdp() -> Any:
    try:
        import osdp  # libosdp==3.2.9
    except ImportError as exc:
        raise ConfigError("door.output=osdp needs libosdp: pip install 'libosdp==3.2.9'") from exc
    if not hasattr(osdp, "PeripheralDevice"):
        raise ConfigError("the installed `osdp` module is not libosdp's: pip uninstall osdp, "
                          "pip install 'libosdp==3.2.9'")
    return osdp


@dataclass(frozen=True)
class PanelVerdict:
    decision_event_id: str
    credential: str
    verdict: str  # GRANTED | DENIED | NO_RESPONSE
    command: dict[str, Any] | None
    latency_s: float | None


@dataclass
class _Pending:
    event_id: str
    credential: str
    sent_at: float
    timer: threading.Timer | None = None


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
    """A libosdp PeripheralDevice on ``device`` (a serial path) at ``address``."""

    def __init__(self, device: str, *, address: int, baud: int, scbk_file: Path, install_mode: bool,
                 debounce_s: float = 3.0, verdict_timeout_s: float = 2.0,
                 on_verdict: Callable[[PanelVerdict], None] | None = None,
                 on_output: Callable[[dict[str, Any]], None] | None = None) -> None:
        osdp = _osdp()
        self._osdp = osdp
        self.scbk_file = Path(scbk_file)
        key = load_scbk(self.scbk_file)
        if key is None and not install_mode:
            raise ConfigError(f"no OSDP key in {self.scbk_file}: provision it (0600, 32 hex digits) "
                              "or set osdp.install_mode = true for first provisioning")
        self.installing = key is None
        flags = [osdp.LibFlag.InstallMode] if self.installing else [osdp.LibFlag.EnforceSecure]
        self.debounce_s, self.verdict_timeout_s = debounce_s, verdict_timeout_s
        self.on_verdict, self.on_output = on_verdict, on_output
        self.state = PanelState()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified when the open card read closes
        self._pending: _Pending | None = None
        self._closed = False  # after close(): offline, the PD is gone
        self._last_sent: dict[str, float] = {}
        self._fd = open_raw(device, baud)
        info = osdp.PDInfo(address, _channel_class(osdp)(self._fd), scbk=key, flags=flags,
                           name=f"facelink-{address}")
        caps = osdp.PDCapabilities([
            (osdp.Capability.CardDataFormat, 1, 1), (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1), (osdp.Capability.OutputControl, 1, 1),
            (osdp.Capability.TextOutput, 1, 1), (osdp.Capability.CommunicationSecurity, 1, 1)])
        self._pd = osdp.PeripheralDevice(info, caps, log_level=osdp.LogLevel.Warning,
                                         command_handler=self._on_command)
        self._pd.start()
        log.info("OSDP PD %d on %s (%s)", address, device,
                 "install mode: waiting for the panel's key" if self.installing else "secure channel")

    # -- FaceLink -> panel -----------------------------------------------------------------
    def card_read(self, credential: Credential, event_id: str) -> bool:
        """Send a CardRead for ``credential``; False when debounced or refused by libosdp."""
        now = time.monotonic()
        key = str(credential)
        with self._lock:
            if now - self._last_sent.get(key, -1e9) < self.debounce_s:
                log.info("OSDP: %s sent %.1f s ago, not repeated", key, now - self._last_sent[key])
                return False
            self._last_sent = {k: t for k, t in self._last_sent.items() if now - t < self.debounce_s}
            self._last_sent[key] = now
            self._finish_pending("NO_RESPONSE", None)
            bits = credential.bits()
            event = {"event": self._osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                     "format": self._osdp.CardFormat.Wiegand, "length": len(bits), "data": pack(bits)}
            ok = bool(self._pd.submit_event(event))
            if ok:
                self.state.card_reads += 1
                pending = _Pending(event_id, key, now)
                pending.timer = threading.Timer(self.verdict_timeout_s, self._timeout, args=(pending,))
                pending.timer.daemon = True
                self._pending = pending
                pending.timer.start()
        log.info("OSDP CardRead %s (%d bits) for event %s: %s", key, len(bits), event_id,
                 "queued" if ok else "refused by libosdp")
        return ok

    @property
    def secure(self) -> bool:
        return not self._closed and bool(self._pd.is_sc_active())

    @property
    def online(self) -> bool:
        return not self._closed and bool(self._pd.is_online())

    # -- panel -> FaceLink -----------------------------------------------------------------
    def _on_command(self, cmd: dict[str, Any]) -> tuple[int, dict | None]:
        try:
            self._handle(cmd)
        except Exception:  # noqa: BLE001 - a bad command must never stop the reader
            log.exception("OSDP: cannot handle command %r", {k: v for k, v in cmd.items() if k != "data"})
            return -1, None
        return 0, None

    def _handle(self, cmd: dict[str, Any]) -> None:
        C = self._osdp.Command
        kind = cmd.get("command")
        self.state.commands += 1
        if kind == C.Keyset:
            if not self.installing:
                log.warning("OSDP: the panel changed the secure channel key")
            save_scbk(self.scbk_file, bytes(cmd["data"]))
            self.installing = False
            log.info("OSDP: secure channel key received from the panel and written to %s", self.scbk_file)
            return
        if kind == C.LED:
            self.state.led = dict(cmd)
            log.info("OSDP panel LED: on_color=%s off_color=%s control=%s temporary=%s",
                     cmd.get("on_color"), cmd.get("off_color"), cmd.get("control_code"), cmd.get("temporary"))
            if cmd.get("on_color") == LED_GREEN:
                self._verdict("GRANTED", cmd)
            elif cmd.get("on_color") == LED_RED:
                self._verdict("DENIED", cmd)
        elif kind == C.Buzzer:
            self.state.buzzer = dict(cmd)
            log.info("OSDP panel buzzer: control=%s on=%s off=%s repeat=%s", cmd.get("control_code"),
                     cmd.get("on_count"), cmd.get("off_count"), cmd.get("rep_count"))
        elif kind == C.Output:
            self.state.output = dict(cmd)
            on = cmd.get("control_code") in OUTPUT_ON
            log.info("OSDP panel output %s: control=%s (%s) timer=%s", cmd.get("output_no"),
                     cmd.get("control_code"), "on" if on else "off", cmd.get("timer_count"))
            if on:
                self._verdict("GRANTED", cmd)
                if self.on_output is not None:
                    self.on_output(dict(cmd))
        elif kind == C.Text:
            self.state.text = str(cmd.get("data", ""))
            log.info("OSDP panel text: %r", self.state.text)
        else:
            log.info("OSDP panel command %s ignored", kind)

    def _verdict(self, verdict: str, cmd: dict[str, Any] | None) -> None:
        with self._lock:
            self._finish_pending(verdict, cmd)

    def _timeout(self, pending: _Pending) -> None:
        with self._lock:
            if self._pending is pending:
                self._finish_pending("NO_RESPONSE", None)

    def _finish_pending(self, verdict: str, cmd: dict[str, Any] | None) -> None:
        """Under self._lock: close the open card read with the panel's verdict."""
        p, self._pending = self._pending, None
        if p is None:
            return
        self._settled.notify_all()
        if p.timer is not None:
            p.timer.cancel()
        latency = None if verdict == "NO_RESPONSE" else round(time.monotonic() - p.sent_at, 3)
        v = PanelVerdict(p.event_id, p.credential, verdict, cmd, latency)
        self.state.verdicts.append(v)
        log.info("OSDP panel verdict for event %s (%s): %s", p.event_id, p.credential, verdict)
        if self.on_verdict is not None:
            try:
                self.on_verdict(v)
            except Exception:  # noqa: BLE001 - recording must not break the reader
                log.exception("cannot record the panel's verdict")

    def close(self) -> None:
        """Stop the reader. An open card read first gets the time left of its verdict window
        (the PD keeps running meanwhile, so the panel's answer is still taken), then is closed
        NO_RESPONSE: the caller records every verdict before it stops delivering events."""
        with self._settled:
            self._settled.wait_for(lambda: self._pending is None, timeout=self.verdict_timeout_s)
            self._finish_pending("NO_RESPONSE", None)
            if self._closed:
                return
            self._closed = True
        try:
            self._pd.teardown()
        finally:
            os.close(self._fd)
