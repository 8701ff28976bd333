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
    """Starts the configured sources; ``drain()`` returns what was read since the last call."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.queue: queue.Queue[BadgeRead] = queue.Queue(maxsize=100)
        self.rejected = 0
        self.failed: dict[str, str] = {}  # a reader that stopped (unplugged, failed): source -> why
        self._stop = threading.Event()
        self._closers: list[Any] = []
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
            self.rejected += 1
            log.warning("badge read from %s refused: %s", source, exc.message)
            return False
        except Exception:  # noqa: BLE001 - whatever a reader sends, the reader goes on
            self.rejected += 1
            log.exception("badge read from %s refused: %r cannot be read", source, text[:MAX_LINE])
            return False
        try:
            self.queue.put_nowait(BadgeRead(str(cred), source))
        except queue.Full:
            self.rejected += 1
            log.error("badge read from %s dropped: the door is not keeping up", source)
            return False
        return True

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
        try:
            text = payload[:MAX_LINE].decode()
            if text.lstrip().startswith("{"):
                text = str(json.loads(text).get("credential", ""))
        except (UnicodeDecodeError, ValueError, AttributeError):
            self.rejected += 1
            log.warning("badge read from mqtt refused: not text or JSON")
            return
        self.put(text, "mqtt")

    # -- serial ----------------------------------------------------------------------------
    def _start_serial(self) -> None:
        c = self.settings.credentials
        if not c.serial_device:
            raise ConfigError("credentials.sources has serial: set credentials.serial_device")
        fd = open_raw(c.serial_device, c.serial_baud)
        threading.Thread(target=self._serial_loop, args=(fd,), name="badges-serial", daemon=True).start()
        self._closers.append(lambda: os.close(fd))

    def _serial_loop(self, fd: int) -> None:
        buf = b""
        while not self._stop.wait(0.02):
            try:
                buf += read_available(fd, 512, hangup_raises=True)
            except OSError as exc:
                if not self._stop.is_set():
                    self._failed("serial", exc)
                return
            *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
            if len(buf) > MAX_LINE:
                buf = b""
            for line in lines:
                if line.strip():
                    self.put(line.decode(errors="replace"), "serial", self.settings.credentials.evdev_format)

    # -- evdev -----------------------------------------------------------------------------
    def _start_evdev(self) -> None:
        c = self.settings.credentials
        try:
            import evdev  # type: ignore
        except ImportError as exc:
            raise ConfigError("credentials.sources has evdev: pip install 'facelink[evdev]'") from exc
        try:
            dev = evdev.InputDevice(c.evdev_device)
            dev.grab()  # the reader's keystrokes go to FaceLink only
        except OSError as exc:
            raise ConfigError(f"cannot open badge reader {c.evdev_device!r}: {exc}") from None
        threading.Thread(target=self._evdev_loop, args=(dev, evdev), name="badges-evdev", daemon=True).start()
        self._closers.append(dev.close)

    def _evdev_loop(self, dev: Any, evdev: Any) -> None:
        typed: list[str] = []
        try:
            for event in dev.read_loop():
                if self._stop.is_set():
                    return
                if event.type != evdev.ecodes.EV_KEY or event.value != 1:
                    continue
                key = evdev.ecodes.KEY.get(event.code, "")
                char = key_char(key if isinstance(key, str) else key[0])
                if char == "\n":
                    self.put("".join(typed), "evdev", self.settings.credentials.evdev_format)
                    typed = []
                elif char and len(typed) < MAX_LINE:
                    typed.append(char)
        except Exception as exc:  # noqa: BLE001 - unplugged or failed: said on health, not a dead thread
            if not self._stop.is_set():
                self._failed("evdev", exc)

    def _failed(self, source: str, exc: BaseException) -> None:
        """A reader stopped: no more badges from it (the door stays locked for card modes)."""
        self.failed[source] = f"{type(exc).__name__}: {exc}"[:200]
        log.error("%s badge reader stopped: %s", source, self.failed[source])

    def health(self) -> dict[str, Any]:
        """What the daemon's health report says about the badge readers."""
        return {"badges_rejected": self.rejected, "badges_failed": dict(self.failed)}

    def close(self) -> None:
        self._stop.set()
        for close in self._closers:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing a badge source failed", exc_info=True)


def key_char(name: str) -> str:
    """evdev key name -> what a keyboard-wedge reader meant: a digit, ':' or Enter ('\\n')."""
    if name in ("KEY_ENTER", "KEY_KPENTER"):
        return "\n"
    for prefix in ("KEY_KP", "KEY_"):
        rest = name[len(prefix):] if name.startswith(prefix) else ""
        if len(rest) == 1 and rest.isdigit():
            return rest
    return ":" if name in ("KEY_SEMICOLON", "KEY_KPCOMMA") else ""
