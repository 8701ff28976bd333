"""The door daemon under load: frames/s, frame->decision latency (median, p95) and RSS.

Runs the real daemon in-process against a private broker on loopback, on the sample door video
replayed as a live camera (paced at camera.max_fps, newest frame only), with an enrolled user.

Modes:
  throughput  the video as a file (every frame, as fast as the pipeline goes): max frames/s
  camera      the video as a live 15 fps camera, default decision rules: per-frame latency
  worst       live camera, a decision on *every* frame (N=1, no tracking, no cooldown): the
              frame->decision latency including the durable outbox write, and RSS over time

    python tools/bench_device.py [--seconds 60] [--modes throughput,camera,worst]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from broker import Broker

from facelink.config import load_settings
from facelink.device.daemon import Daemon
from facelink.device.heap import rss_mib as heap_rss_mib
from facelink.enroll import faces, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.models.engine import FaceEngine
from facelink.models.provision import provision


def rss_mib() -> float:
    rss = heap_rss_mib()
    return float("nan") if rss is None else rss  # nan: no /proc here


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def run_mode(mode: str, seconds: float, workdir: Path, engine: FaceEngine, port: int, video: Path) -> dict:
    s = load_settings()
    s.store.database = workdir / "facelink.db"
    s.mqtt.outbox = workdir / f"outbox-{mode}.db"
    s.mqtt.port = port
    s.camera.source = str(video)
    s.camera.loop = True
    s.matching.collection_id = "bench"
    if mode == "worst":
        s.matching.frames_required = s.matching.frames_window = 1
        s.matching.cooldown_s = 0
        s.matching.track_max_age_s = 0
        s.liveness.enabled = False  # a one-frame track is never live (FROZEN_FEED needs two frames)
    daemon = Daemon(s, engine=engine, live=mode != "throughput")
    rss_start = rss_mib()
    samples: list[float] = []

    def sample() -> None:  # RSS once a minute (and at the end) to see whether it keeps growing
        while not daemon.stop_requested.wait(60.0):
            samples.append(round(rss_mib(), 1))

    threading.Thread(target=sample, daemon=True).start()
    timer = threading.Timer(seconds, daemon.stop_requested.set)
    timer.start()
    started = time.monotonic()
    daemon.run()
    elapsed = time.monotonic() - started
    lat = list(daemon.stats.latencies_ms)
    dec = list(daemon.stats.decision_latencies_ms)
    return {"mode": mode, "seconds": round(elapsed, 1), "frames": daemon.stats.frames,
            "fps": round(daemon.stats.frames / elapsed, 1), "decisions": daemon.stats.decisions,
            "frame_latency_ms_median": pct(lat, 0.5), "frame_latency_ms_p95": pct(lat, 0.95),
            "decision_latency_ms_median": pct(dec, 0.5), "decision_latency_ms_p95": pct(dec, 0.95),
            "rss_mib_start": round(rss_start, 1), "rss_mib_end": round(rss_mib(), 1), "rss_mib_per_minute": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="per mode (600 for the 10-minute RSS figure)")
    parser.add_argument("--modes", default="throughput,camera,worst")
    args = parser.parse_args()
    settings = load_settings()
    models = provision(settings.models.models_dir).models_dir
    engine = FaceEngine.from_settings(settings.models)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ctx = Context(Store(work / "facelink.db"), lambda: engine)
        faces.create_collection(ctx, "bench")
        users.create_user(ctx, "bench", "employee")
        faces.index_faces(ctx, "bench", models / "samples" / "single_face.jpg", "badge", user_id="employee")
        ctx.store.close()
        with Broker(work / "broker") as broker:
            for mode in args.modes.split(","):
                results.append(run_mode(mode, args.seconds, work, engine, broker.port,
                                        models / "samples" / "single_face.mp4"))
                print(json.dumps(results[-1]), flush=True)
    print("\n| mode | frames/s | frame latency median / p95 | frame->decision median / p95 | decisions | RSS start -> end |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} ({r['seconds']:.0f} s) | {r['fps']} | {r['frame_latency_ms_median']} / "
              f"{r['frame_latency_ms_p95']} ms | {r['decision_latency_ms_median']} / {r['decision_latency_ms_p95']} ms | "
              f"{r['decisions']} | {r['rss_mib_start']} -> {r['rss_mib_end']} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
