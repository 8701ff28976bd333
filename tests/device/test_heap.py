"""device/heap.py: the freed C heap goes back to the system; a door without a desk does not load
the fleet's cryptography."""

from __future__ import annotations

import json
import subprocess
import sys

from facelink.device.heap import release_free_heap, rss_mib

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


def test_release_free_heap_gives_back_pages_freed_between_live_blocks():
    out = json.loads(subprocess.run([sys.executable, "-c", FRAGMENT], check=True, capture_output=True,
                                    text=True).stdout)
    assert out["released"] is not None and out["released"] >= 50  # ~94 MiB were free between the live blocks
    assert out["after"] <= out["before"] - 50


def test_release_free_heap_reports_a_number_and_keeps_live_memory():
    data = bytearray(b"x" * 10_000_000)
    assert rss_mib() is not None
    assert release_free_heap() is not None
    assert data.count(b"x") == 10_000_000


def test_a_door_without_sync_does_not_import_the_fleet():
    code = ("import sys, facelink.device.main; "  # facelink-device's entry point
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'cryptography'}), "
            "'facelink.fleet.follower' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["[]", "False"]
