"""device/heap.py: the freed C heap goes back to the system; a door without a desk does not load
the fleet's cryptography."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

from facelink.device.heap import release_free_heap, rss_mib

needs_trim = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_trim"),
                                reason="this C library has no malloc_trim (not glibc)")

FRAGMENT = """
import json
from facelink.device.heap import release_free_heap, rss_mib
blocks = [bytearray(64 * 1024) for _ in range(1600)]  # 100 MiB in heap-sized blocks (below mmap's)
keep = blocks[::16]  # one block in 16 stays: the freed ones sit between live ones, not at the top
del blocks
before = rss_mib()
released = release_free_heap()
print(json.dumps({"before": before, "after": rss_mib(), "released": released}))
"""


@needs_trim
def test_release_free_heap_gives_back_pages_freed_between_live_blocks():
    out = json.loads(subprocess.run([sys.executable, "-c", FRAGMENT], check=True, capture_output=True,
                                    text=True).stdout)
    assert out["released"] is not None and out["released"] >= 50  # ~94 MiB were free between the live blocks
    assert out["after"] <= out["before"] - 50


@needs_trim
def test_release_free_heap_reports_a_number_and_keeps_live_memory():
    data = bytearray(b"x" * 10_000_000)
    assert rss_mib() is not None
    assert release_free_heap() is not None
    assert data.count(b"x") == 10_000_000


def test_release_free_heap_never_raises_where_the_c_library_fails(monkeypatch):
    """An optimisation must not stop the door from starting: a C library ctypes cannot open
    gives None, not an exception."""
    def broken(_name):
        raise OSError("no C library here")

    monkeypatch.setattr(ctypes, "CDLL", broken)
    assert release_free_heap() is None


def test_a_door_without_sync_does_not_import_the_fleet():
    code = ("import sys, facelink.device.daemon; "  # what facelink-device's main() runs
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'cryptography'}), "
            "'facelink.fleet.follower' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["[]", "False"]
