"""Search part of SearchFacesByImage as a collection grows: sqlite-vec KNN vs numpy brute force.

For each size (default 1k, 10k, 100k, 1M faces of 128-d unit vectors) the same collection is
searched with the store's sqlite-vec query (``Store.knn``: vec0, cosine, collection filter) and
with the door's in-memory numpy index (matrix-vector product + top-k), top 10, median of
``--queries`` queries. Also reports bulk enrollment throughput separately (bench_enroll).

    python tools/bench_search.py [--sizes 1000,10000,100000,1000000] [--queries 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from facelink.enroll.store import Store


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, 128), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(store: Store, vectors: np.ndarray, start: int) -> None:
    """Bulk-load vectors straight into the schema's vec0 table (search is what is measured)."""
    with store.transaction() as c:
        c.executemany("INSERT INTO face_vectors(rowid, embedding, collection_id) VALUES (?, ?, 'bench')",
                      ((start + i + 1, v.tobytes()) for i, v in enumerate(vectors)))


def numpy_topk(matrix: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ q
    idx = np.argpartition(-scores, k)[:k]
    return idx[np.argsort(-scores[idx])]


def timed(fn, queries: np.ndarray) -> float:
    fn(queries[0])
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    queries = unit_vectors(args.queries, rng)
    print("| faces | sqlite-vec KNN (vec0, cosine) | numpy brute force (in-memory) | same top-1 |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        store.insert_collection("bench", "bench")
        matrix = np.zeros((0, 128), np.float32)
        for n in sizes:
            extra = unit_vectors(n - len(matrix), rng)
            fill(store, extra, len(matrix))
            matrix = np.concatenate([matrix, extra])
            vec_ms = timed(lambda q: store.knn("bench", q, 10), queries)
            np_ms = timed(lambda q, m=matrix: numpy_topk(m, q, 10), queries)
            agree = all(store.knn("bench", q, 1)[0][0] - 1 == numpy_topk(matrix, q, 10)[0] for q in queries[:5])
            print(f"| {n:,} | {vec_ms:.2f} ms | {np_ms:.2f} ms | {'yes' if agree else 'NO'} |", flush=True)
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
