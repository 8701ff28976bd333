"""Whether this machine's wall clock — the one every published event is stamped with — is
synchronized, as the kernel says (``adjtimex(2)``, read-only: ``modes = 0``); ``stamp()`` is an
event's time and that word together.

A Raspberry Pi has no battery-backed clock: after a power cut without network it runs from
fake-hwclock's last saved time, which may be hours or days behind, and the door keeps deciding
(it is offline by design). Its decisions are then stamped with that time. NTP, chrony and
systemd-timesyncd all tell the kernel when they discipline the clock; the kernel marks it
unsynchronized (``TIME_ERROR``, ``STA_UNSYNC``) at boot until one does, and again once its
estimated error has grown past 16 s without one (about 9 hours at the kernel's 500 ppm
bound). The door says so on each event stamped meanwhile, so that an auditor reading "who got
through the door, when" knows which times to doubt.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from datetime import datetime, timezone
from typing import Any

TIME_ERROR = 5  # adjtimex's return: the clock is not synchronized
_TIMEX_BYTES = 512  # struct timex is 208 bytes on 64-bit Linux, 128 on 32-bit: room for either


@functools.cache
def _adjtimex():
    """libc's adjtimex, or None where there is none (not Linux, no such symbol)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.adjtimex
    except (OSError, AttributeError):
        return None
    call.argtypes, call.restype = [ctypes.c_void_p], ctypes.c_int
    return call


def synchronized() -> bool | None:
    """The kernel's word on the wall clock now; None where it cannot be asked (not Linux, a call
    refused), never an exception. A read-only system call (``modes = 0``): a few microseconds."""
    call = _adjtimex()
    if call is None:
        return None
    timex = ctypes.create_string_buffer(_TIMEX_BYTES)  # zeroed: modes = 0 reads, changes nothing
    state = call(timex)
    return None if state < 0 else state != TIME_ERROR


def stamp() -> dict[str, Any]:
    """An event's ``timestamp`` (UTC, ISO 8601) and ``clock_synchronized`` as of now."""
    return {"timestamp": datetime.now(timezone.utc).isoformat(), "clock_synchronized": synchronized()}
