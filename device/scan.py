"""Nearest-face scans over the door's gallery: exact float32, and an int8 scan whose top-1 is
proven equal to the exact one.

The int8 copy holds ``rint(127 * a)`` of each float32 row ``a`` (embeddings are L2-normalised:
every value lies in [-1, 1], so the fixed symmetric scale never clips). ``residual`` bounds
``||a - q8 / 127||`` over the rows (0.0445 for 128 values), so for a float32 query ``x`` the exact score of every
row lies within ``R = residual * ||x||`` of its approximate one. The scan keeps every row whose
approximate score is within ``2R`` of the best approximate score — the exact top-1 is always
among them (its approximate score is at least ``best_approx - 2R``) — and re-ranks those rows in
float32: the answer is the exact search's, not an approximation of it. The band is usually a
handful of rows.

numpy has no int8 dot product: the int8 rows are widened to float32 in blocks that stay in the
core's cache and multiplied there (BLAS), split across threads. Whether that beats streaming
the float32 rows depends on the machine: ``tools/bench_search.py`` measures both.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

SCALE = 127.0
BLOCK = 2048  # int8 rows widened at a time: 1 MiB of float32, inside L2
EPS = 1e-4  # float32 rounding of both scores, far above its real size (~1e-6)
TIE = 1e-6  # scores closer than this are one score (float32 rounding; see first_best)


def quantise(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """The int8 copy of ``matrix`` and a bound of every row's residual (module docstring).

    Rows within [-1, 1] (unit vectors always are) round to within half a step per value, so
    ``sqrt(dim) * 0.5 / SCALE`` bounds every residual without computing it; a matrix with a
    larger value (clipped) gets its residuals measured."""
    q8 = np.empty(matrix.shape, dtype=np.int8)
    if not len(matrix):
        return q8, 0.0
    clipped = float(np.max(matrix)) > 1.0 or float(np.min(matrix)) < -1.0
    buf = np.empty((min(len(matrix), 16_384), matrix.shape[1]), dtype=np.float32)
    residual = float(np.sqrt(matrix.shape[1])) * 0.5 / SCALE
    worst = 0.0
    for s in range(0, len(matrix), len(buf)):
        rows = matrix[s:s + len(buf)]
        block = buf[:len(rows)]
        np.multiply(rows, np.float32(SCALE), out=block)
        np.rint(block, out=block)
        if clipped:
            np.clip(block, -127, 127, out=block)
        np.copyto(q8[s:s + len(rows)], block, casting="unsafe")
        if clipped:
            block -= rows * np.float32(SCALE)
            worst = max(worst, float(np.sqrt(np.max(np.einsum("ij,ij->i", block, block)))) / SCALE)
    return q8, (worst * 1.001 + 1e-6 if clipped else residual)


def first_best(scores: np.ndarray) -> int:
    """The lowest position whose score is within TIE of the best: BLAS may round the same row's
    score differently by one unit in the last place depending on where the row sits (two
    enrollments of one photo), so a tie is decided by row order, never by rounding."""
    return int(np.flatnonzero(scores >= scores.max() - TIE)[0])


def exact_top1(matrix: np.ndarray, query: np.ndarray) -> tuple[int, float]:
    scores = matrix @ query
    i = first_best(scores)
    return i, float(scores[i])


def _approx(q8: np.ndarray, query: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    buf = np.empty((BLOCK, q8.shape[1]), dtype=np.float32)
    for s in range(lo, hi, BLOCK):
        e = min(hi, s + BLOCK)
        block = buf[:e - s]
        np.copyto(block, q8[s:e], casting="unsafe")
        np.dot(block, query, out=out[s:e])


def approx_scores(q8: np.ndarray, query: np.ndarray, pool: ThreadPoolExecutor | None,
                  threads: int = 1) -> np.ndarray:
    """``q8 @ query / SCALE`` (float32), the rows split in ``threads`` parts: the calling
    thread scans one, ``pool`` (``threads - 1`` workers) the others."""
    n = len(q8)
    out = np.empty(n, dtype=np.float32)
    scaled = (query / np.float32(SCALE)).astype(np.float32)
    workers = threads if pool is not None else 1
    bounds = [n * k // workers for k in range(workers + 1)]
    futures = [pool.submit(_approx, q8, scaled, out, bounds[k], bounds[k + 1])
               for k in range(1, workers)] if pool is not None else []
    _approx(q8, scaled, out, bounds[0], bounds[1])
    for f in futures:
        f.result()
    return out


def certified_top1(matrix: np.ndarray, q8: np.ndarray, residual: float, query: np.ndarray,
                   pool: ThreadPoolExecutor | None = None, threads: int = 1) -> tuple[int, float, int]:
    """The exact top-1 (row, float32 cosine) through the int8 copy, and how many rows were
    re-ranked in float32."""
    approx = approx_scores(q8, query, pool, threads)
    band = 2.0 * residual * float(np.linalg.norm(query)) + EPS
    candidates = np.flatnonzero(approx >= approx.max() - band)
    if not len(candidates):  # a query that is not finite: the exact scan says what it says
        i, cosine = exact_top1(matrix, query)
        return i, cosine, len(matrix)
    exact = matrix[candidates] @ query
    k = first_best(exact)  # candidates ascend: ties go to the lowest row, as in exact_top1
    return int(candidates[k]), float(exact[k]), len(candidates)
