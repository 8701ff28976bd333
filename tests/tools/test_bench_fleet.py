"""tools/bench_fleet.py end to end at a small size: the desk's publisher brings every simulated
door to the whole collection, each revocation reaches every door, nothing is rejected."""

from __future__ import annotations

import argparse
import math

import bench_fleet


def test_small_fleet_bootstraps_follows_and_revokes():
    r = bench_fleet.run(argparse.Namespace(faces=300, users=30, doors=3, revocations=2))
    assert r["bootstrap_complete"] and r["delta_path_complete"] and r["rejected"] == 0
    assert all(math.isfinite(r[k]) for k in ("revocation_every_door_p50_s", "revocation_every_door_p95_s"))
