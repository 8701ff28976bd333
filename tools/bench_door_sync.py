"""Revocation latency through REAL doors: desk DeleteUser -> every door's matcher no longer holds
the user (README "Fleet sync" > "On the door").

One private mosquitto (tools/broker.py), the desk's `facelink fleet publish` as a process, and
``--doors`` real door daemons (`facelink-device`: real models, their own SQLite stores, sync on,
a looped photo as camera) that bootstrap from the desk's snapshot. Each trial enrolls a user with
a real face at the desk, waits until every door applied it, then deletes the user and measures,
per door, the time until its matcher reloaded (the door's log line, wall clock, ms) and until the
change set was applied. Prints JSON with p50/p95 and the load average before/after.

    .venv/bin/python tools/bench_door_sync.py --doors 3 --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker import Broker  # noqa: E402

FACES = Path(__file__).resolve().parent.parent.parent / "shared" / "faces"
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


def times(log: Path, needle: str, after: float) -> list[float]:
    out = []
    for line in log.read_text().splitlines():
        if needle in line:
            try:
                t = datetime.strptime(line[:23], LOG_TIME).timestamp()
            except ValueError:
                continue
            if t >= after:
                out.append(t)
    return out


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def reached(log: Path, applied_line: str, after: float) -> tuple[float, float] | None:
    """(applied, matcher reloaded): the door's log time of ``applied_line`` and of the first
    "user index updated" after it; None until both are there."""
    applied = times(log, applied_line, after)
    if not applied:
        return None
    reloaded = times(log, "user index updated", applied[0])
    return (applied[0], reloaded[0]) if reloaded else None


def door_seq(db: Path) -> int:
    """The seq a door applied (its sync_applied table; plain sqlite3, read only)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT seq FROM sync_applied WHERE collection_id = 'staff'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return -1
    return int(row[0]) if row else 0


def wait_desk(db: Path, store) -> int:
    """The desk's newest published seq once it has published every change of its feed."""
    from facelink.enroll.feed import ChangeFeed
    from facelink.fleet.journal import Journal

    journal = Journal(db)
    try:
        position = ChangeFeed(store, "staff").read_since(0).position
        wait(lambda: (journal.last("staff") or None) is not None and journal.last("staff").feed_position >= position
             and journal.published_seq("staff") == journal.last("staff").seq, 60)
        return journal.published_seq("staff")
    finally:
        journal.close()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--doors", type=int, default=3)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--faces", type=Path, default=FACES)
    args = ap.parse_args()

    from facelink.config import load_settings
    from facelink.enroll import faces, users
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store
    from facelink.fleet.signing import generate_keypair
    from facelink.models.engine import FaceEngine

    work = Path(tempfile.mkdtemp(prefix="bench-door-sync-"))
    load_before = os.getloadavg()
    broker = Broker(work / "broker").start()
    procs: list[subprocess.Popen] = []
    try:
        generate_keypair(work / "keys/desk.key", work / "keys/desk.pub")
        engine = FaceEngine.from_settings(load_settings().models)
        store = Store(work / "desk/facelink.db")
        ctx = Context(store, lambda: engine)
        faces.create_collection(ctx, "staff")
        users.create_user(ctx, "staff", "obama")
        faces.index_faces(ctx, "staff", args.faces / "people/obama/1.jpg", "obama-badge", user_id="obama")
        base = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
        base.update({"FACELINK_MQTT__PORT": str(broker.port), "PYTHONUNBUFFERED": "1"})
        desk_env = {**base, "FACELINK_STORE__DATABASE": str(work / "desk/facelink.db"),
                    "FACELINK_FLEET__PUBLISH": '["staff"]', "FACELINK_FLEET__SIGNING_KEY": str(work / "keys/desk.key"),
                    "FACELINK_FLEET__HEARTBEAT_S": "1", "FACELINK_FLEET__REQUEST_BURST": "50",
                    "FACELINK_FLEET__DOORS": json.dumps({f"door-{i}": ["staff"] for i in range(args.doors)})}
        with open(work / "desk.log", "w") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "facelink.enroll.cli", "fleet", "publish"],
                                          env=desk_env, stdout=out, stderr=subprocess.STDOUT))
        feed = work / "feed"
        feed.mkdir()
        shutil.copy(args.faces / "people/obama/2.jpg", feed / "a.jpg")
        logs: list[Path] = []
        dbs: list[Path] = []
        for i in range(args.doors):
            d = work / f"door-{i}"
            d.mkdir()
            env = {**base, "FACELINK_STORE__DATABASE": str(d / "facelink.db"), "FACELINK_MQTT__OUTBOX": str(d / "outbox.db"),
                   "FACELINK_MQTT__DEVICE_ID": f"door-{i}", "FACELINK_CAMERA__SOURCE": str(feed),
                   "FACELINK_CAMERA__LOOP": "true", "FACELINK_CAMERA__MAX_FPS": "3", "FACELINK_MODELS__THREADS": "1",
                   "FACELINK_MATCHING__COLLECTION_ID": "staff", "FACELINK_MATCHING__FRAMES_REQUIRED": "1",
                   "FACELINK_MATCHING__FRAMES_WINDOW": "1", "FACELINK_MATCHING__COOLDOWN_S": "0",
                   "FACELINK_MATCHING__TRACK_MAX_AGE_S": "0", "FACELINK_LIVENESS__ENABLED": "false",
                   "FACELINK_SYNC__ENABLED": "true", "FACELINK_FLEET__TRUSTED_KEYS": json.dumps([str(work / "keys/desk.pub")])}
            logs.append(d / "door.log")
            dbs.append(d / "facelink.db")
            with open(logs[-1], "w") as out:
                procs.append(subprocess.Popen([sys.executable, "-m", "facelink.device.main"], env=env, stdout=out,
                                              stderr=subprocess.STDOUT))
        if not all(wait(lambda log=log: times(log, "decision GRANTED user=obama", 0), 300) for log in logs):
            raise SystemExit("doors never granted the enrolled face: see " + str(work))
        effective, applied = [], []
        for k in range(args.trials):
            user = f"temp-{k}"
            users.create_user(ctx, "staff", user)
            faces.index_faces(ctx, "staff", args.faces / "people/biden/1.jpg", f"{user}-badge", user_id=user)
            desk_seq = wait_desk(work / "desk/facelink.db", store)
            if not all(wait(lambda d=d, seq=desk_seq: door_seq(d) == seq, 60) for d in dbs):
                raise SystemExit(f"trial {k}: enrollment never reached every door")
            t0 = time.time()
            store.delete_user("staff", user)
            revoked = wait_desk(work / "desk/facelink.db", store)
            needle = f"sync staff: applied seq {revoked} "
            if not all(wait(lambda log=log, t=t0, n=needle: reached(log, n, t), 60) for log in logs):
                raise SystemExit(f"trial {k}: revocation never reached every door")
            effective.append(max(reached(log, needle, t0)[1] for log in logs) - t0)  # type: ignore[index]
            applied += [reached(log, needle, t0)[0] - t0 for log in logs]  # type: ignore[index]
        result = {"doors": args.doors, "trials": args.trials,
                  "revocation_all_doors_matcher_s": {"p50": round(statistics.median(effective), 3),
                                                     "p95": round(pct(effective, 0.95), 3),
                                                     "max": round(max(effective), 3)},
                  "revocation_per_door_applied_s": {"p50": round(statistics.median(applied), 3),
                                                    "p95": round(pct(applied, 0.95), 3)},
                  "loadavg_before": [round(x, 2) for x in load_before],
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(json.dumps(result, indent=2))
        store.close()
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
