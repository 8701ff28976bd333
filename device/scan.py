"""Nearest-face scans over the door's gallery: exact float32, and an int8 scan whose top-1 is
proven equal to the exact one.

The int8 copy holds ``rint(127 * a)`` of each float32 row ``a`` (embeddings are L2-normalised:
every value lies in [-1, 1], so the fixed symmetric scale never clips). ``residual`` bounds
``||a - q8 / 127||`` over the rows (0.0445 for 128 values). The float32 query ``x`` is quantised
too, to ``xq / s`` with its own scale ``s = 127 / max|x|`` and residual ``rx = ||x - xq / s||``
(measured). With ``norm`` the largest ``||q8 / 127||`` of the rows (measured at quantisation: a
unit row gives at most ``1 + residual``; nothing assumes the rows are unit vectors), for every row
``|a.x - (q8 . xq) / (127 s)| <= R = residual * ||x|| + norm * rx``: the scan keeps every row
whose approximate score is within ``2R`` of the best approximate score — the true top-1 is
always among them (its approximate score is at least ``best_approx - 2R``) — and re-scores those
rows exactly (``final_top1``, where the float32 scan ends too): the answer is the exact search's,
row and cosine, not an approximation of it. The band is usually a handful of rows. The door's
gallery holds unit rows only (``models.embedder.not_embeddings``); the bound does not rely on it.

numpy has no int8 dot product: the products ``q8 . xq`` are computed by ``_int8dot`` (C, AVX2 /
NEON, exact integer arithmetic, built at install; ``setup.py``), the rows split across threads
that the kernel starts and joins itself; the kernel also takes the band as it goes (only rows
near its running best are written out), so the scan reads the int8 copy once and writes almost
nothing.
Where it could not be built (no compiler at install), ``KERNEL`` is None (``kernel_isa()`` says
so, as does the door's health) and the door scans float32 only (same answers). ``tools/bench_search.py`` measures both against the memory floor.
"""

from __future__ import annotations

import numpy as np

from facelink.models.embedder import not_embeddings

try:
    from . import _int8dot as KERNEL
except ImportError:  # built without a C compiler: float32 scans only (setup.py)
    KERNEL = None

SCALE = 127.0
MIN_ROWS_PER_THREAD = 16_384  # below this a second thread costs more than it saves
EPS = 1e-4  # rounding in the bound and the band for a unit query (check_query): float64 ~1e-15,
# the float32 product before rint in quantise ~4e-6 of a step per value (~1e-6); a wide margin


def quantise(matrix: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The int8 copy of ``matrix``, a bound of every row's residual and the largest norm of the
    copy's rows (``||q8 / 127||``; module docstring).

    Rows within [-1, 1] (unit vectors always are) round to within half a step per value, so
    ``sqrt(dim) * 0.5 / SCALE`` bounds every residual without computing it; a matrix with a
    larger value (clipped) gets its residuals measured."""
    q8 = np.empty(matrix.shape, dtype=np.int8)
    if not len(matrix):
        return q8, 0.0, 0.0
    clipped = float(np.max(matrix)) > 1.0 or float(np.min(matrix)) < -1.0
    buf = np.empty((min(len(matrix), 16_384), matrix.shape[1]), dtype=np.float32)
    residual = float(np.sqrt(matrix.shape[1])) * 0.5 / SCALE
    worst = norm = 0.0
    for s in range(0, len(matrix), len(buf)):
        rows = matrix[s:s + len(buf)]
        block = buf[:len(rows)]
        np.multiply(rows, np.float32(SCALE), out=block)
        np.rint(block, out=block)
        if clipped:
            np.clip(block, -127, 127, out=block)
        np.copyto(q8[s:s + len(rows)], block, casting="unsafe")
        norm = max(norm, float(np.sqrt(np.max(np.einsum("ij,ij->i", block, block)))) / SCALE)
        if clipped:
            block -= rows * np.float32(SCALE)
            worst = max(worst, float(np.sqrt(np.max(np.einsum("ij,ij->i", block, block)))) / SCALE)
    return q8, (worst * 1.001 + 1e-6 if clipped else residual), norm * 1.001 + 1e-6


def kernel_isa() -> str | None:
    """What the int8 scan runs on here ("avx2", "neon", "c"), None where the kernel is not built."""
    return KERNEL.ISA if KERNEL is not None else None


def window(query: np.ndarray) -> float:
    """How far below the best float32 score (BLAS) the true best row's score can lie: twice
    float32's worst rounding of a 128-term dot product of a unit row with ``query``
    (``128 * 2**-24 * ||x||``), with a margin."""
    return 1e-4 * max(1.0, float(np.linalg.norm(query.astype(np.float64))))


def final_top1(matrix: np.ndarray, query: np.ndarray, rows: np.ndarray) -> tuple[int, float]:
    """The top-1 among ``rows`` (ascending positions; they must hold the true best row): each
    scored in float64 — products of float32 values are exact, the 128-term sum is the same
    for a row wherever it sits and whichever other rows are scored with it — the highest
    taken, a tie (identical rows: one photo enrolled twice) going to the lowest position. Both
    scans end here, so they return the same row and the same cosine, bit for bit."""
    scores = (matrix[rows].astype(np.float64) * query.astype(np.float64)).sum(axis=1)
    k = int(np.argmax(scores))  # the first of equal maxima
    return int(rows[k]), float(scores[k])


def exact_top1(matrix: np.ndarray, query: np.ndarray) -> tuple[int, float]:
    """The exact top-1 (position, cosine): a float32 scan, then every row within ``window``
    of its best re-scored by ``final_top1``."""
    check_query(query)
    scores = matrix @ query
    return final_top1(matrix, query, np.flatnonzero(scores >= scores.max() - window(query)))


def quantise_query(query: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(int8 query, its scale s, its residual ||query - int8 / s||), scaled so max|query| -> 127."""
    top = float(np.max(np.abs(query)))
    scale = SCALE / top if top > 0 else 1.0
    xq = np.rint(query.astype(np.float64) * scale)
    residual = float(np.linalg.norm(query.astype(np.float64) - xq / scale))
    return xq.astype(np.int8), scale, residual


def score_bound(residual: float, norm: float, query: np.ndarray, query_residual: float) -> float:
    """R: how far any row's int8 score (scaled back) can lie from its float32 score (module
    docstring): ``residual * ||x|| + norm * rx``."""
    return residual * float(np.linalg.norm(query)) + norm * query_residual


ALL_ROWS = 1 << 32  # a band wider than any two int32 scores can differ: every row is kept


def band_scan(q8: np.ndarray, xq: np.ndarray, band: int,
              threads: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """The positions (ascending, int32) and int32 scores ``q8 @ xq`` (exact) of every row scoring
    at least ``best - band``, and ``best``, the largest score; the rows split over ``threads``
    threads (started and joined by the kernel; fewer for a small gallery). The band is taken
    during the pass: no score of the other rows is written or read again."""
    if KERNEL is None:
        raise RuntimeError("the int8 scan kernel is not built (device/_int8dot.c, setup.py)")
    n = len(q8)
    positions, scores = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32)
    workers = max(1, min(threads, n // MIN_ROWS_PER_THREAD, 8))
    best, count = KERNEL.scan(q8, xq, band, positions, scores, workers)
    return positions[:count], scores[:count], best


def approx_scores(q8: np.ndarray, xq: np.ndarray, threads: int = 1) -> tuple[np.ndarray, int]:
    """``q8 @ xq`` for every row (int32, exact) and the largest (for tests and the bound's checks)."""
    _, scores, best = band_scan(q8, xq, ALL_ROWS, threads)
    return scores, best


def certified_top1(matrix: np.ndarray, q8: np.ndarray, residual: float, norm: float,
                   query: np.ndarray, threads: int = 1) -> tuple[int, float, int]:
    """The exact top-1 (position, cosine; the same as ``exact_top1``, bit for bit) through the
    int8 copy, and how many rows were re-scored."""
    check_query(query)
    xq, scale, query_residual = quantise_query(query)
    bound = score_bound(residual, norm, query, query_residual)
    if not np.isfinite(bound):  # a query or copy too large for the bound: scan float32
        i, cosine = exact_top1(matrix, query)
        return i, cosine, len(matrix)
    band = int(np.ceil((2.0 * bound + EPS) * SCALE * scale))  # in units of the int32 scores
    candidates, _, _ = band_scan(q8, xq, min(band, ALL_ROWS), threads)
    i, cosine = final_top1(matrix, query, candidates)
    return i, cosine, len(candidates)


def top1(matrix: np.ndarray, q8: np.ndarray, residual: float, norm: float, query: np.ndarray,
         threads: int = 1, int8: bool = True) -> tuple[int, float]:
    """The exact top-1 of a non-empty gallery: through the int8 copy when ``int8`` and the
    kernel is built, else the float32 scan (the same answer either way)."""
    if int8 and KERNEL is not None:
        i, cosine, _ = certified_top1(matrix, q8, residual, norm, query, threads)
        return i, cosine
    return exact_top1(matrix, query)


def check_query(query: np.ndarray) -> None:
    """A query that is not an embedding (a value not finite, or a length not 1 — the embedder
    returns unit vectors; a zero or huge vector would put every row, or none, in the re-rank)
    has no nearest row: ValueError (the door fails closed on it)."""
    if len(not_embeddings(query[None, :])):
        raise ValueError("query embedding is not finite or not a unit vector")
