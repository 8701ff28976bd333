"""Bulk enrollment throughput (photos/s) through the real `index-folder` path: overall (with
each worker's one-time model loading) and once running (first to last photo).

Badge photos: the sample portraits shipped with the models (and ../shared/faces/people when
present), each indexed under several ExternalImageIds so that nothing is deduplicated. Each
worker has its own single-threaded engine (``models.threads = 1``: no oversubscription).

The default engine and the previous default (SFace in OpenCV DNN) run alternately, ``--rounds``
each, into fresh collections, so that machine load hits both alike; the ratio is the median of
the per-round ratios.

    python tools/bench_enroll.py [--photos 300] [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from facelink.config import ModelSettings, load_settings
from facelink.enroll import bulk, faces
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.models.engine import FaceEngine
from facelink.models.provision import provision

SHARED = Path(__file__).resolve().parents[2] / "shared" / "faces" / "people"
PREVIOUS = "previous default (SFace in OpenCV DNN)"


@dataclass(frozen=True)
class Run:
    overall: float  # photos/s including the workers' model loading
    steady: float  # photos/s from the first to the last photo
    summary: dict


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def index_once(models: ModelSettings, folder: Path, workers: int, tmp: Path, name: str) -> Run:
    engine = FaceEngine.from_settings(models)
    ctx = Context(Store(tmp / f"{name}.db"), lambda: engine)
    try:
        faces.create_collection(ctx, "bench")
        entries = bulk.folder_entries(folder)
        single = models.model_copy(update={"threads": 1})
        done: list[float] = []
        t = time.perf_counter()
        summary = bulk.index_entries(ctx, "bench", entries, quality_filter="NONE", workers=workers,
                                     engine_factory=lambda: FaceEngine.from_settings(single),
                                     progress=lambda _e: done.append(time.perf_counter())).to_json()["Summary"]
        elapsed = time.perf_counter() - t
    finally:
        ctx.store.close()
    steady = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else float("nan")
    return Run(summary["Images"] / elapsed, steady, summary)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per configuration")
    args = parser.parse_args()
    settings = load_settings()
    models = provision(settings.models.models_dir).models_dir
    sources = sorted((models / "samples").glob("*.jpg"))
    if SHARED.is_dir():
        sources += sorted(p for p in SHARED.rglob("*.jpg"))
    configs = {"default": settings.models,
               PREVIOUS: settings.models.model_copy(update={"embedder_backend": "opencv"})}
    runs: dict[str, list[Run]] = {c: [] for c in configs}
    load_before = load()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "badges"
        folder.mkdir()
        for i in range(args.photos):
            shutil.copy(sources[i % len(sources)], folder / f"badge-{i:05d}.jpg")
        for r in range(args.rounds):
            for name, ms in configs.items():
                runs[name].append(index_once(ms, folder, args.workers, Path(tmp), f"{name[:7]}-{r}"))
    print(f"{args.photos} photos ({len(sources)} distinct, typical size "
          f"{sum(p.stat().st_size for p in sources) // len(sources) // 1024} KiB), {args.workers} workers "
          f"x 1 inference thread, {args.rounds} alternating rounds per configuration; {os.cpu_count()} CPUs; "
          f"load average (1/5/15 min) {load_before} before, {load()} after\n")
    print("| engine | photos/s incl. model loading (median) | photos/s once running (median) | "
          "runs (once running) | indexed / unindexed / failed (last run) |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        s = rs[-1].summary
        print(f"| {name} | {statistics.median(r.overall for r in rs):.1f} | "
              f"{statistics.median(r.steady for r in rs):.1f} | {', '.join(f'{r.steady:.1f}' for r in rs)} | "
              f"{s['Indexed']} / {s['Unindexed']} / {s['Failed']} |")
    ratio = statistics.median(a.steady / b.steady for a, b in zip(runs["default"], runs[PREVIOUS]))
    print(f"\ndefault / previous default, photos/s once running: {ratio:.2f}x (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
