"""Badge readers for the card modes: where a card tap comes from.

- ``mqtt``: ``<prefix>/<device>/credential``, payload ``H10301:18:12345`` or
  ``{"credential": "H10301:18:12345"}`` (integration with another reader or system). Anyone who
  can publish there can claim a badge, so this source is refused with ``card_or_face`` (a badge
  alone would open the door); with ``card_and_face`` the face must still match the holder.
- ``evdev``: a USB keyboard-wedge reader (Linux input device; ``pip install evdev``): digits
  typed, then Enter. ``FACILITY:CARD`` or the decimal value of the format's facility+card bits.
- ``serial``: a reader that sends one line per card: ``FORMAT:FACILITY:CARD`` or the Wiegand
  bits as ``0``/``1`` characters (parity checked).

Every source puts :class:`BadgeRead` on one queue the daemon drains;
malformed input is logged and dropped (never a crash, never a guessed card).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facelink.errors import ConfigError, FaceLinkError

from .serial_port import open_raw, read_available
from .wiegand import FORMATS, Credential, decode, is_number


@dataclass(frozen=True)
class BadgeRead:
    """One card tap from any reader, in canonical form."""

    credential: str  # canonical "H10301:18:12345"
    source: str  # mqtt | evdev | serial

log = logging.getLogger(__name__)

MAX_LINE = 256
# a serial line that goes on arriving this long after the reader opened began before it opened
SERIAL_QUIET_S = 0.1


def parse_typed(text: str, fmt: str) -> Credential:
    """What a keyboard-wedge or serial reader sends -> Credential (InvalidParameterException if not)."""
    text = text.strip()
    if text.count(":") == 2:
        return Credential.parse(text)
    if text and set(text) <= {"0", "1"} and len(text) in {f.bits for f in FORMATS.values()}:
        return decode([int(c) for c in text])
    f = FORMATS[fmt]
    if text.count(":") == 1:
        facility, card = text.split(":")
        if is_number(facility) and is_number(card):
            return Credential(fmt, int(facility), int(card))
    if is_number(text):
        value = int(text)
        return Credential(fmt, value >> f.card_bits, value & ((1 << f.card_bits) - 1))
    return Credential.parse(text)  # raises with a clear message


class BadgeSources:
    """Starts the configured sources; ``drain()`` returns what was read since the last call.

    A local reader (serial, evdev) that stops while running (unplugged, hung up, failed) is named
    in ``failed`` and reopened from its configured path with back-off (``reopen_backoff_s``: the
    first wait and the longest, doubling in between) until it is back or ``close()``."""

    CLOSE_WAIT_S = 2.0  # close(): how long a polling reader gets to release its own handle
    REOPEN_BACKOFF_S = (1.0, 30.0)

    def __init__(self, settings: Any, reopen_backoff_s: tuple[float, float] = REOPEN_BACKOFF_S) -> None:
        self.settings = settings
        self.queue: queue.Queue[BadgeRead] = queue.Queue(maxsize=100)
        self.rejected = 0
        self.failed: dict[str, str] = {}  # a reader that stopped (unplugged, failed): source -> why
        self.reopens: dict[str, int] = {}  # source -> how many times a stopped reader came back
        self.threads: dict[str, threading.Thread] = {}  # source -> its reader thread
        self.reopen_backoff_s = reopen_backoff_s
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards rejected, failed, reopens and _current
        self._current: dict[str, tuple[Any, Callable[[Any], None]]] = {}  # source -> (handle, close)
        self._closers: list[Any] = []
        self._wakes_on_stop: set[str] = set()  # readers that notice close() by themselves
        self.serial_in_sync = threading.Event()  # the serial reader knows where lines begin
        c, mode = settings.credentials, settings.matching.mode
        self.sources = list(c.sources) if mode != "face" else []
        if "mqtt" in self.sources and mode == "card_or_face":
            raise ConfigError("credentials.sources has mqtt with matching.mode = card_or_face: any "
                              "client of the broker could open the door; use card_and_face or a "
                              "local reader (evdev, serial)")

    def start(self) -> None:
        for source in self.sources:
            getattr(self, f"_start_{source}")()

    def put(self, text: str, source: str, fmt: str = "H10301") -> bool:
        try:
            cred = parse_typed(text, fmt)
        except FaceLinkError as exc:
            self._refused(log.warning, "badge read from %s refused: %s", source, exc.message)
            return False
        except Exception:  # noqa: BLE001 - whatever a reader sends, the reader goes on
            self._refused(log.exception, "badge read from %s refused: %r cannot be read", source, text[:MAX_LINE])
            return False
        try:
            self.queue.put_nowait(BadgeRead(str(cred), source))
        except queue.Full:
            self._refused(log.error, "badge read from %s dropped: the door is not keeping up", source)
            return False
        return True

    def _refused(self, say: Callable[..., None], message: str, *args: Any) -> None:
        """One badge read refused (``badges_rejected``; the readers' threads count together), and why."""
        with self._lock:
            self.rejected += 1
        say(message, *args)

    def drain(self) -> list[BadgeRead]:
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out

    # -- mqtt ------------------------------------------------------------------------------
    def _start_mqtt(self) -> None:
        from facelink.mqtt.client import MqttClient
        from facelink.mqtt.topics import DeviceTopics

        m = self.settings.mqtt
        topic = DeviceTopics(m.topic_prefix, m.device_id).credential
        client = MqttClient(m, client_id=f"facelink-{m.device_id}-badges", subscriptions=[topic],
                            on_message=lambda _topic, payload: self._on_mqtt(payload))
        self._closers.append(client.stop)
        log.info("badge reads from MQTT %s", topic)

    def _on_mqtt(self, payload: bytes) -> None:
        if len(payload) > MAX_LINE:  # refused whole: cut short it can read as another badge
            self._refused(log.warning, "badge read from mqtt refused: longer than %d bytes", MAX_LINE)
            return
        try:
            text = payload.decode()
            if text.lstrip().startswith("{"):
                text = str(json.loads(text).get("credential", ""))
        except (UnicodeDecodeError, ValueError, AttributeError):
            self._refused(log.warning, "badge read from mqtt refused: not text or JSON")
            return
        self.put(text, "mqtt")

    # -- serial ----------------------------------------------------------------------------
    def _start_serial(self) -> None:
        c = self.settings.credentials
        if not c.serial_device:
            raise ConfigError("credentials.sources has serial: set credentials.serial_device")
        fd = open_raw(c.serial_device, c.serial_baud)  # at start, a bad device is a ConfigError
        self._start_reader("serial", fd, os.close, lambda: open_raw(c.serial_device, c.serial_baud),
                           self._read_serial, wakes_on_stop=True)

    def _read_serial(self, fd: int) -> None:
        """Badge lines from ``fd`` until the line fails (raises) or ``close()`` (returns).

        What came before the reader opened is discarded (``open_raw``); a line already on its way
        when it opened goes on arriving, and its tail is no badge (``18:12345`` read from
        ``H10301:18:12345``, another card): what arrives within ``SERIAL_QUIET_S`` of the open
        is dropped up to its line's end. ``serial_in_sync`` is set once the next byte begins a line."""
        self.serial_in_sync.clear()
        try:
            self._read_serial_lines(fd)
        finally:
            self.serial_in_sync.clear()

    def _read_serial_lines(self, fd: int) -> None:
        buf = b""  # a partial line dies with the handle it came from
        # the rest of a line dropped up to its end: "opened" (on its way when the reader opened)
        # or "long" (longer than MAX_LINE: refused whole)
        dropping: str | None = "opened"
        opened = time.monotonic()
        while not self._stop.wait(0.02):
            data = read_available(fd, 512, hangup_raises=True)
            if dropping == "opened" and not buf and not data and time.monotonic() - opened >= SERIAL_QUIET_S:
                dropping = None  # nothing since the open: the next byte begins a line
                self.serial_in_sync.set()
            buf += data
            *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
            if dropping and lines:  # the end of that line: its tail is no badge of its own
                if dropping == "opened" and lines[0].strip():
                    self._refused(log.warning, "badge read from serial refused: a line on its way when the "
                                  "reader opened (its tail is no badge)")
                lines, dropping = lines[1:], None
                self.serial_in_sync.set()
            if len(buf) > MAX_LINE:
                if dropping != "long":  # refused whole: also a line on its way at the open
                    self._refuse_long_line()
                buf, dropping = b"", "long"  # up to its end, whatever pauses it has (never "opened" again)
            for line in lines:
                if len(line) > MAX_LINE:
                    self._refuse_long_line()
                elif line.strip():
                    self.put(line.decode(errors="replace"), "serial", self.settings.credentials.evdev_format)

    def _refuse_long_line(self) -> None:
        """A serial line longer than MAX_LINE is refused whole, whatever pieces it came in."""
        self._refused(log.warning, "badge read from serial refused: a line longer than %d bytes", MAX_LINE)

    # -- evdev -----------------------------------------------------------------------------
    def _start_evdev(self) -> None:
        c = self.settings.credentials
        try:
            import evdev  # type: ignore
        except ImportError as exc:
            raise ConfigError("credentials.sources has evdev: pip install 'facelink[evdev]'") from exc

        def open_evdev() -> Any:
            dev = evdev.InputDevice(c.evdev_device)
            try:
                dev.grab()  # the reader's keystrokes go to FaceLink only
            except BaseException:
                dev.close()
                raise
            return dev

        try:
            dev = open_evdev()
        except OSError as exc:
            raise ConfigError(f"cannot open badge reader {c.evdev_device!r}: {exc}") from None
        self._start_reader("evdev", dev, lambda d: d.close(), open_evdev,
                           lambda d: self._read_evdev(d, evdev))

    def _read_evdev(self, dev: Any, evdev: Any) -> None:
        """Badges typed on ``dev`` until it fails (raises) or ``close()`` (returns). A badge is
        read only from all its keystrokes: one with a key that is not a digit, ':' or Enter
        (Shift, Caps Lock and Num Lock aside), or typed across keystrokes the kernel dropped
        (SYN_DROPPED: its buffer overflowed), is refused at its Enter -- never read from the
        keys that are left, which can be another badge."""
        typed: list[str] = []  # a partial badge dies with the handle it came from
        spoiled: str | None = None  # why the badge being typed cannot be read
        ecodes = evdev.ecodes
        for event in dev.read_loop():
            if self._stop.is_set():
                return
            if event.type == ecodes.EV_SYN and event.code == ecodes.SYN_DROPPED:
                spoiled = spoiled or "the input device dropped keystrokes (its buffer overflowed)"
                continue
            if event.type != ecodes.EV_KEY or event.value != 1:
                continue
            key = ecodes.KEY.get(event.code, "")
            name = key if isinstance(key, str) else key[0]
            char = key_char(name)
            if char == "\n":
                if spoiled is None:
                    self.put("".join(typed), "evdev", self.settings.credentials.evdev_format)
                else:
                    self._refused(log.warning, "badge read from evdev refused: %s", spoiled)
                typed, spoiled = [], None
            elif char and len(typed) < MAX_LINE:
                typed.append(char)
            elif char:
                spoiled = spoiled or f"longer than {MAX_LINE} keys"
            elif name not in IGNORED_KEYS:
                spoiled = spoiled or f"key {name or event.code} is not a digit, ':' or Enter"
        if not self._stop.is_set():
            raise OSError("the input device stopped sending events")

    # -- a local reader: read, and when it stops, reopen it with back-off -----------------------
    def _start_reader(self, source: str, handle: Any, close: Callable[[Any], None],
                      reopen: Callable[[], Any], read: Callable[[Any], None], wakes_on_stop: bool = False) -> None:
        """Run ``read(handle)`` on a thread of its own; ``close(handle)`` releases a handle and
        ``reopen()`` makes a new one from the configured path after the reader stopped.
        ``wakes_on_stop``: ``read`` notices ``close()`` by itself (it polls), so ``close()`` waits
        for it to release its own handle instead of closing the handle under a read (a closed fd
        number can be reused at once by another open: the read would then take its bytes)."""
        if wakes_on_stop:
            self._wakes_on_stop.add(source)
        with self._lock:
            self._current[source] = (handle, close)
        thread = threading.Thread(target=self._reader_loop, args=(source, handle, close, reopen, read),
                                  name=f"badges-{source}", daemon=True)
        self.threads[source] = thread
        thread.start()

    def _reader_loop(self, source: str, handle: Any, close: Callable[[Any], None],
                     reopen: Callable[[], Any], read: Callable[[Any], None]) -> None:
        """The one owner of "a reader stopped, reopen it": the same for every local reader."""
        while True:
            try:
                read(handle)
                failure: BaseException | None = None
            except Exception as exc:  # noqa: BLE001 - unplugged or failed: said on health, reopened
                failure = exc
            self._release(source, handle)
            if self._stop.is_set():  # close(): whatever the read raised, it is not a failure
                return
            why = self._failed(source, failure or OSError("the reader stopped"))
            handle = self._reopen(source, why, close, reopen)
            if handle is None:
                return

    def _release(self, source: str, handle: Any) -> None:
        """Close ``handle`` unless ``close()`` already took it: each handle is closed once."""
        with self._lock:
            current = self._current.get(source)
            if current is None or current[0] is not handle:
                return
            del self._current[source]
        try:
            current[1](handle)
        except Exception:  # noqa: BLE001 - a handle that already failed may fail to close
            log.debug("closing the stopped %s badge reader failed", source, exc_info=True)

    def _reopen(self, source: str, why: str, close: Callable[[Any], None], reopen: Callable[[], Any]) -> Any:
        """Try ``reopen()`` with back-off until it works (the new handle) or ``close()`` (None)."""
        delay, longest = self.reopen_backoff_s
        while not self._stop.wait(delay):
            delay = min(delay * 2, longest)
            try:
                handle = reopen()
            except Exception as exc:  # noqa: BLE001 - still unplugged: try again later
                with self._lock:  # why it stopped, and why it is not back yet
                    self.failed[source] = f"{why}; reopen: {_why(exc)}"[:200]
                log.debug("%s badge reader still down (next try in %.1f s): %s", source, delay, _why(exc))
                continue
            with self._lock:
                if self._stop.is_set():  # close() ran while it opened: it is not ours to keep
                    stopping = True
                else:
                    stopping = False
                    self._current[source] = (handle, close)
                    self.failed.pop(source, None)
                    self.reopens[source] = self.reopens.get(source, 0) + 1
                    count = self.reopens[source]
            if stopping:
                try:
                    close(handle)
                except Exception:  # noqa: BLE001 - closing is best effort
                    log.debug("closing a badge reader opened during close() failed", exc_info=True)
                return None
            log.warning("%s badge reader is back (reopened %d time%s)", source, count, "" if count == 1 else "s")
            return handle
        return None

    def _failed(self, source: str, exc: BaseException) -> str:
        """A reader stopped: no badge from it until it is reopened (the door stays locked for card modes)."""
        with self._lock:
            self.failed[source] = why = _why(exc)
        log.error("%s badge reader stopped: %s (reopening it)", source, why)
        return why

    def health(self) -> dict[str, Any]:
        """What the daemon's health report says about the badge readers."""
        with self._lock:
            return {"badges_rejected": self.rejected, "badges_failed": dict(self.failed),
                    "badges_reopens": dict(self.reopens)}

    def close(self, wait_s: float | None = None) -> None:
        """Stop every source. A reader that notices the stop by itself (serial: it polls every
        20 ms) is given ``wait_s`` to release its own handle; handles still open then (evdev,
        which only a close unblocks, or a reader stuck in the kernel) are closed here."""
        self._stop.set()
        deadline = time.monotonic() + (self.CLOSE_WAIT_S if wait_s is None else wait_s)
        for source, thread in list(self.threads.items()):
            if source in self._wakes_on_stop and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:  # a reader that reopens after this sees _stop and closes its own handle
            handles = list(self._current.values())
            self._current.clear()
        closers = [lambda h=h, c=c: c(h) for h, c in handles] + self._closers
        for close in closers:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing a badge source failed", exc_info=True)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


# keys a keyboard-wedge reader may press that type nothing themselves (Shift: ':' is Shift+;)
IGNORED_KEYS = frozenset({"KEY_LEFTSHIFT", "KEY_RIGHTSHIFT", "KEY_CAPSLOCK", "KEY_NUMLOCK"})


def key_char(name: str) -> str:
    """evdev key name -> what a keyboard-wedge reader meant: a digit, ':' or Enter ('\\n')."""
    if name in ("KEY_ENTER", "KEY_KPENTER"):
        return "\n"
    for prefix in ("KEY_KP", "KEY_"):
        rest = name[len(prefix):] if name.startswith(prefix) else ""
        if len(rest) == 1 and rest.isdigit():
            return rest
    return ":" if name in ("KEY_SEMICOLON", "KEY_KPCOMMA") else ""
