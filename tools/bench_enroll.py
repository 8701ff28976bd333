"""Bulk enrollment throughput (photos/s) through the real `index-folder` path: overall (with
each worker's one-time model loading) and once running (first to last photo).

Badge photos: the sample portraits shipped with the models (and ../shared/faces/people when
present), each indexed under several ExternalImageIds so that nothing is deduplicated.

    python tools/bench_enroll.py [--photos 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from facelink.config import load_settings
from facelink.enroll import bulk, faces
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.models.engine import FaceEngine
from facelink.models.provision import provision

SHARED = Path(__file__).resolve().parents[2] / "shared" / "faces" / "people"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    settings = load_settings()
    models = provision(settings.models.models_dir).models_dir
    sources = sorted((models / "samples").glob("*.jpg"))
    if SHARED.is_dir():
        sources += sorted(p for p in SHARED.rglob("*.jpg"))
    engine = FaceEngine.from_settings(settings.models)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "badges"
        folder.mkdir()
        for i in range(args.photos):
            shutil.copy(sources[i % len(sources)], folder / f"badge-{i:05d}.jpg")
        ctx = Context(Store(Path(tmp) / "bench.db"), lambda: engine)
        faces.create_collection(ctx, "bench")
        entries = bulk.folder_entries(folder)
        single = settings.models.model_copy(update={"threads": 1})
        done: list[float] = []
        load_before = os.getloadavg()
        t = time.perf_counter()
        summary = bulk.index_entries(ctx, "bench", entries, quality_filter="NONE", workers=args.workers,
                                     engine_factory=lambda: FaceEngine.from_settings(single),
                                     progress=lambda _e: done.append(time.perf_counter())).to_json()["Summary"]
        elapsed = time.perf_counter() - t
        steady = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else float("nan")
        ctx.store.close()
    print(f"{summary['Images']} photos ({len(sources)} distinct, typical size "
          f"{sum(p.stat().st_size for p in sources) // len(sources) // 1024} KiB) in {elapsed:.1f} s: "
          f"{summary['Images'] / elapsed:.1f} photos/s with {args.workers} workers including model loading, "
          f"{steady:.1f} photos/s once running; indexed {summary['Indexed']}, "
          f"unindexed {summary['Unindexed']}, failed {summary['Failed']}; load average (1/5/15 min) "
          f"{' / '.join(f'{v:.1f}' for v in load_before)} before, "
          f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())} after; {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
