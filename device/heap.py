"""The door's resident memory: what the process holds, and giving back what start-up freed.

Loading a model leaves its parsed file behind as freed C heap: onnxruntime reads SFace's 38 MB
ONNX file, builds its own copy of the weights and frees the first one, but glibc keeps freed pages
in its arenas, so they stay resident for the life of the process (measured on SFace alone: ~32 MiB
of 85; README, Performance: door daemon). :func:`release_free_heap` asks glibc to hand them back
(``malloc_trim(0)``); the daemon calls it once, at the top of ``run()``: everything is loaded, and
the pump, sync and camera threads have not started (paho's network thread and any badge reader
already run; they allocate little). Where the C library has no ``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def rss_mib() -> float | None:
    """This process's resident set in MiB (None where /proc is not there)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_free_heap() -> float | None:
    """Return the C heap's free pages to the kernel; the MiB of RSS that went (None: not
    supported here, or it failed). Takes about a millisecond; memory in use is untouched. Never
    raises: this is an optimisation, and the door must start without it."""
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library already loaded
        if trim is None:
            return None
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        before = rss_mib()
        trim(0)
        after = rss_mib()
    except Exception as exc:  # noqa: BLE001 - whatever ctypes or libc says, the door goes on
        log.warning("could not give freed heap back to the system: %s", exc)
        return None
    if before is None or after is None:
        return 0.0
    log.info("returned %.1f MiB of freed heap to the system (RSS %.1f MiB)", before - after, after)
    return round(max(0.0, before - after), 1)
