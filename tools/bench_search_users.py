"""SearchUsers' nearest-user query at scale: the exact scan of the faces associated with users
(``Store.nearest_users``, what SearchUsers and SearchUsersByImage run), against what they ran
before (the 4,096 nearest faces of any kind from the sqlite-vec KNN, read back as rows).

A real collection database (the store's schema, both the faces table and the vec0 table) of
``--faces`` faces with ``--users`` users holding ``--per-user`` faces each; the rest are
unassociated (a visitor log). Embeddings are **simulated** (random unit vectors, as in
tools/bench_serve.py): the cost of either query does not depend on where the vectors lie. Timed:
one probe (SearchUsersByImage, SearchUsers by FaceId) and 10 probes (SearchUsers by a UserId
with 10 faces), median of ``--queries``, on one connection, the database warm in the page cache.

    python tools/bench_search_users.py [--faces 100000] [--users 10000] [--per-user 2,10] [--queries 15]
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
from pathlib import Path

import numpy as np
from bench_search import _cpu

from facelink.enroll.search import MAX_SEARCH_FACES
from facelink.enroll.store import NEAREST_USERS_SQL, Store

BOX = json.dumps({"Width": 0.3, "Height": 0.4, "Left": 0.3, "Top": 0.2})


def build(path: Path, vectors: np.ndarray, users: int, per_user: int, rng: np.random.Generator) -> Store:
    """The collection "c": ``users`` users with ``per_user`` faces each, at random rows."""
    store = Store(path)
    store.insert_collection("c", "simulated")
    owner: list[str | None] = [None] * len(vectors)
    for j, row in enumerate(rng.permutation(len(vectors))[:users * per_user]):
        owner[row] = f"user-{j // per_user:06d}"
    with store.transaction() as c:
        c.executemany("INSERT INTO users(collection_id, user_id, created_at) VALUES ('c', ?, 0)",
                      ((f"user-{i:06d}",) for i in range(users)))
        c.executemany(
            "INSERT INTO faces(id, face_id, collection_id, image_id, user_id, image_sha256, bounding_box, "
            "confidence, embedding, indexed_at) VALUES (?, ?, 'c', ?, ?, ?, ?, 99.9, ?, 0)",
            ((i + 1, str(uuid.UUID(int=i)), str(uuid.UUID(int=i + 2**100)), owner[i], f"{i:064x}", BOX,
              v.tobytes()) for i, v in enumerate(vectors)))
        c.executemany("INSERT INTO face_vectors(rowid, embedding, collection_id) VALUES (?, ?, 'c')",
                      ((i + 1, v.tobytes()) for i, v in enumerate(vectors)))
    return store


def median_ms(fn: Callable[[int], object], queries: int) -> float:
    fn(0)
    times = []
    for i in range(queries):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def before(store: Store, probes: np.ndarray) -> None:
    """The query SearchUsers ran before: per probe, the 4,096 nearest faces read back as rows."""
    for p in probes:
        store.faces_by_rows([r for r, _ in store.knn("c", p, MAX_SEARCH_FACES)])


def timed(store: Store, probes: np.ndarray, queries: int) -> list[float]:
    """Median ms: the exact scan with 1 and 10 probes, then the query before, 1 and 10 probes."""
    return ([median_ms(lambda i, n=n: store.nearest_users("c", list(probes[i, :n]), 500), queries) for n in (1, 10)]
            + [median_ms(lambda i, n=n: before(store, probes[i, :n]), queries) for n in (1, 10)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--per-user", default="2,10")
    parser.add_argument("--queries", type=int, default=15)
    args = parser.parse_args()
    started, load_before = time.monotonic(), os.getloadavg()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.faces, 128), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    probes = rng.standard_normal((args.queries + 1, 10, 128), dtype=np.float32)
    probes /= np.linalg.norm(probes, axis=2, keepdims=True)
    rows, plan = [], ""
    for per_user in (int(p) for p in args.per_user.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            store = build(Path(tmp) / "bench.db", vectors, args.users, per_user, rng)
            plan = "; ".join(r[3] for r in store.query("EXPLAIN QUERY PLAN " + NEAREST_USERS_SQL.format(
                probes="(?)"), (probes[0, 0].tobytes(), "c", None, 500)))
            timings = timed(store, probes, args.queries)
            store.close()
        associated = args.users * per_user
        rows.append(f"| {args.faces:,} | {args.users:,} × {per_user} = {associated:,} | "
                    f"{args.faces - associated:,} | {timings[0]:.0f} / {timings[1]:.0f} ms | "
                    f"{timings[2]:.0f} / {timings[3]:.0f} ms |")
        print(rows[-1], flush=True)
    print()
    load = [" / ".join(f"{x:.1f}" for x in avg) for avg in (load_before, os.getloadavg())]
    print(f"SearchUsers' query, {platform.machine()} {os.cpu_count()} CPUs ({_cpu()}); {datetime.date.today()}; "
          f"median of {args.queries}; load average {load[0]} before, {load[1]} after (1/5/15 min; "
          f"{time.monotonic() - started:.0f} s run); query plan: {plan}")
    print()
    print("| faces | users × faces each = associated | unassociated | exact scan of associated faces, "
          "1 / 10 probes | before: 4,096 nearest faces (KNN + rows), 1 / 10 probes |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
