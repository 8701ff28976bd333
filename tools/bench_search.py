"""The door's search and load at 1k–1M faces: exact float32 scan vs the int8 scan (the compiled
kernel, ``device/_int8dot.c``) with exact re-rank (``facelink.device.scan``), against the
memory-stream floor (one and two threads), on real embeddings.

Gallery: the CelebA subset of ``../shared/faces`` embedded by the real engine (cached by
``facelink evaluate``), every other photo of each person enrolled, plus **simulated**
distractors drawn from a Gaussian with the real embeddings' mean and covariance, L2-normalised
(their cosines to real faces match real impostor pairs: mean ~0.09, 99.99th percentile ~0.43).
Queries: the other photos. For each size: median ms of the exact scan (``matrix @ q``, numpy's
BLAS threads) and of the door's scan (2 threads, and 1), their ratio, agreement with the
exact scan over every query (the same row and the same cosine, bit for bit) (and over those whose exact top-1 passes Similarity 99), and the
memory-stream floor (one integer pass over the float32 rows, and over the int8 copy on one
thread and split over two).
Then ``UserIndex.load()`` from a real collection database of the largest size. numpy's BLAS runs
on one thread as in the door (``limit_blas_threads``), except for the float32 contender's own
timing, which gets two.

    python tools/bench_search.py [--sizes 1000,10000,100000,1000000] [--queries 51] [--no-load]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from facelink.config.settings import Settings
from facelink.device import scan
from facelink.device.gallery import Gallery
from facelink.device.matcher import UserIndex
from facelink.enroll.store import Store
from facelink.models import evaluate as ev
from facelink.models.engine import FaceEngine
from facelink.models.manifest import calibration_for
from facelink.models.runtime import limit_blas_threads
from facelink.models.similarity import similarity_to_cosine

CELEBA = Path(__file__).resolve().parents[1] / ".." / "shared" / "faces" / "celeba"


SETTLE_S = 3.0  # labelled settle before the int8 contenders (see main)


def real_embeddings(settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """(gallery, queries): every other photo of each CelebA person, embedded by the engine."""
    data = ev.load_dataset(CELEBA)
    emb = ev.embed(data, settings.models, workers=2)
    found = emb.found
    vectors, labels = emb.vectors[found].astype(np.float32), data.labels[found]
    nth = np.zeros(len(labels), dtype=int)
    for label in np.unique(labels):
        at = np.flatnonzero(labels == label)
        nth[at] = np.arange(len(at))
    return vectors[nth % 2 == 0], vectors[nth % 2 == 1]


def distractors(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.multivariate_normal(real.mean(0), np.cov(real.T), size=n).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def median_ms(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    fn(queries[0])
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def stream_ms(array: np.ndarray, pool: ThreadPoolExecutor | None = None, rounds: int = 11) -> float:
    """One integer pass over ``array`` (its bytes read once): the memory-stream floor, on one
    thread, or on two (the calling thread and ``pool``'s) each summing half."""
    words = array.reshape(-1).view(np.int64)
    if pool is None:
        return median_ms(lambda _: words.sum(), np.zeros((rounds, 1)))
    half = len(words) // 2

    def both(_: object) -> None:
        other = pool.submit(words[half:].sum)
        words[:half].sum()
        other.result()

    return median_ms(both, np.zeros((rounds, 1)))


def build_database(path: Path, gallery: np.ndarray, model_version: str) -> None:
    """A real collection database (the store's schema) holding ``gallery``: two faces per user."""
    store = Store(path)
    store.insert_collection("door", model_version)
    box = json.dumps({"Width": 0.3, "Height": 0.4, "Left": 0.3, "Top": 0.2})
    with store.transaction() as c:
        c.executemany("INSERT INTO users(collection_id, user_id, created_at) VALUES ('door', ?, 0)",
                      ((f"user-{i:07d}",) for i in range((len(gallery) + 1) // 2)))
        c.executemany(
            "INSERT INTO faces(id, face_id, collection_id, image_id, external_image_id, user_id, "
            "image_sha256, bounding_box, confidence, embedding, indexed_at) "
            "VALUES (?, ?, 'door', ?, ?, ?, ?, ?, 99.9, ?, 0)",
            ((i + 1, str(uuid.UUID(int=i)), str(uuid.UUID(int=i + 2**100)), f"badge-{i:07d}",
              f"user-{i // 2:07d}", f"{i:064x}", box, v.tobytes()) for i, v in enumerate(gallery)))
    store.close()


def bench_load(gallery: np.ndarray, model_version: str, rounds: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "door.db"
        t = time.perf_counter()
        build_database(path, gallery, model_version)
        built = time.perf_counter() - t
        store = Store(path, readonly=True)
        times = []
        for _ in range(rounds):
            index = UserIndex(store, "door", model_version)
            t = time.perf_counter()
            index.load()
            times.append(time.perf_counter() - t)
            assert len(index) == len(gallery)
            del index
        t = time.perf_counter()
        faces = store.collection_faces("door")  # the per-row read load() used before
        np.stack([f.embedding for f in faces])
        per_row = time.perf_counter() - t
        store.close()
    return (f"UserIndex.load() of {len(gallery):,} faces: {statistics.median(times):.2f} s median of "
            f"{rounds} ({', '.join(f'{x:.2f}' for x in times)} s); the per-row read it replaces "
            f"(FaceRow objects + np.stack): {per_row:.1f} s; database built in {built:.0f} s "
            "(faces table; the sqlite-vec table, which load does not read, left empty)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=51, help="queries timed per size")
    parser.add_argument("--load-rounds", type=int, default=3)
    parser.add_argument("--no-load", action="store_true")
    args = parser.parse_args()
    started, load_before = time.monotonic(), os.getloadavg()
    limit_blas_threads(1)  # as the door runs (facelink.device.daemon)
    settings = Settings()
    model_version = FaceEngine.from_settings(settings.models).model_version
    real, queries = real_embeddings(settings)
    threshold = similarity_to_cosine(99.0, calibration_for(model_version))
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    fill = distractors(real, max(sizes) - len(real), rng)
    timed = queries[rng.permutation(len(queries))[:args.queries]]
    pool = ThreadPoolExecutor(1)
    rows = []
    for n in sizes:
        matrix = np.concatenate([real, fill[:max(0, n - len(real))]])[:n]
        matrix = matrix[rng.permutation(len(matrix))]
        g = Gallery.of(np.arange(1, n + 1), [""] * n, [None] * n, [""] * n, matrix)
        # The int8 contenders and the floors run first, on a machine where no OpenBLAS worker
        # spins: after a two-thread BLAS call its workers keep spinning on the second core for
        # over half a second (measured: the two-thread int8 scan at 100k took 1.06 ms right
        # after, 0.95 ms 0.5 s later, 0.63 ms 3 s later). The door never has them (its BLAS is
        # capped at one thread).
        time.sleep(SETTLE_S)
        two_ms = median_ms(lambda q, g=g: scan.certified_top1(g.matrix, g.q8, g.residual, g.q8_norm, q, 2), timed)
        one_ms = median_ms(lambda q, g=g: scan.certified_top1(g.matrix, g.q8, g.residual, g.q8_norm, q), timed)
        f32_floor, i8_floor, i8_floor2 = stream_ms(g.matrix), stream_ms(g.q8), stream_ms(g.q8, pool)
        with threadpool_limits(2, user_api="blas"):  # the float32 contender gets BLAS's two threads
            exact_ms = median_ms(lambda q, m=g.matrix: scan.exact_top1(m, q), timed)
        agree = passing = passing_agree = 0
        reranked = []
        for q in queries:
            i, cosine = scan.exact_top1(g.matrix, q)
            j, cosine_j, k = scan.certified_top1(g.matrix, g.q8, g.residual, g.q8_norm, q, 2)
            same = (i, cosine) == (j, cosine_j)  # the same row and the same cosine, bit for bit
            agree += same
            passing += cosine >= threshold
            passing_agree += same and cosine >= threshold
            reranked.append(k)
        rows.append(f"| {n:,} | {exact_ms:.2f} ms | {two_ms:.2f} ms | {one_ms:.2f} ms | "
                    f"{exact_ms / two_ms:.2f}x | {f32_floor:.2f} ms | {i8_floor:.2f} / {i8_floor2:.2f} ms | "
                    f"{two_ms / i8_floor2:.2f} / {one_ms / i8_floor:.2f} | "
                    f"{agree}/{len(queries)} ({passing_agree}/{passing} passing) | "
                    f"{statistics.median(reranked):.0f} |")
        print(rows[-1], flush=True)
    load_line = "" if args.no_load else bench_load(
        np.concatenate([real, fill])[:max(sizes)], model_version, args.load_rounds)
    load_after = os.getloadavg()
    print()
    print(f"Search, {platform.machine()} {os.cpu_count()} CPUs ({_cpu()}), numpy {np.__version__}; "
          f"{datetime.date.today()}; {len(real):,} real CelebA embeddings + simulated distractors, "
          f"{len(queries):,} real queries (timing: median of {len(timed)}); Similarity 99 = cosine "
          f"{threshold:.3f}; load average {_load(load_before)} before, {_load(load_after)} after "
          f"(1/5/15 min; {time.monotonic() - started:.0f} s run)")
    print()
    print(f"int8 kernel: {scan.kernel_isa() or 'NOT BUILT (float32 only)'}")
    print()
    print("| faces | exact float32 (BLAS, 2 threads) | int8 scan + exact re-rank, 2 threads | same, 1 thread | "
          "exact / int8 (2 thr) | float32 stream floor (1 thr) | int8 stream floor, 1 / 2 thr | "
          "int8 / its floor, 2 thr / 1 thr | same top-1 and cosine as exact (queries passing Similarity 99) | "
          "rows re-scored (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if load_line:
        print()
        print(load_line)
    return 0


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.1f}" for x in avg)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
