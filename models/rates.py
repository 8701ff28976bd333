"""Rates with their uncertainty: every pair scored with chunked matrix products, FAR/FRR/TAR
with exact (Clopper-Pearson) 95 % intervals, EER. No Python loop over pairs anywhere."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK = 1024  # rows per matrix product: 1024 x N float32 scores at a time


# -- exact binomial confidence interval --------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def _beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of I_x(a, b) by bisection on log10(x): exact enough for rates down to 1e-300."""
    lo, hi = -300.0, 0.0
    for _ in range(64):
        mid = (lo + hi) / 2
        if betainc(a, b, 10.0 ** mid) < q:
            lo = mid
        else:
            hi = mid
    return 10.0 ** ((lo + hi) / 2)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial rate k/n."""
    if n <= 0:
        return (float("nan"), float("nan"))
    alpha = 1.0 - level
    lo = 0.0 if k == 0 else _beta_ppf(alpha / 2, k, n - k + 1)
    hi = 1.0 if k == n else _beta_ppf(1 - alpha / 2, k + 1, n - k)
    return (lo, hi)


@dataclass(frozen=True)
class Rate:
    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def to_json(self) -> dict[str, Any]:
        lo, hi = clopper_pearson(self.k, self.n)
        return {"rate": _sig(self.value), "count": self.k, "of": self.n, "ci95": [_sig(lo), _sig(hi)]}


def _sig(x: float) -> float:
    return float(f"{x:.4g}") if math.isfinite(x) else x


# -- all pairs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    """Cosines of all genuine and all impostor pairs, sorted ascending."""

    genuine: np.ndarray
    impostor: np.ndarray

    def accepted(self, threshold: float) -> tuple[int, int]:
        """(impostor pairs, genuine pairs) at or above ``threshold``."""
        return (int(self.impostor.size - np.searchsorted(self.impostor, threshold, "left")),
                int(self.genuine.size - np.searchsorted(self.genuine, threshold, "left")))

    def far(self, threshold: float) -> Rate:
        return Rate(self.accepted(threshold)[0], self.impostor.size)

    def frr(self, threshold: float) -> Rate:
        return Rate(self.genuine.size - self.accepted(threshold)[1], self.genuine.size)

    def threshold_for_far(self, far: float) -> float | None:
        """The lowest cosine whose measured FAR is <= ``far`` (None: too few pairs to show it)."""
        n = self.impostor.size
        allowed = math.floor(far * n + 1e-9)
        if allowed < 1:
            return None
        return float(np.nextafter(self.impostor[n - allowed - 1], np.float32(2))) if allowed < n else -1.0

    def tar_at_far(self, far: float) -> dict[str, Any] | None:
        t = self.threshold_for_far(far)
        if t is None:
            return None
        acc = self.accepted(t)[1]
        return {"cosine": round(t, 4), "far_measured": Rate(self.accepted(t)[0], self.impostor.size).to_json(),
                "tar": Rate(acc, self.genuine.size).to_json()}

    def eer(self) -> dict[str, float]:
        grid = np.linspace(-0.2, 1.0, 2401)
        far = 1 - np.searchsorted(self.impostor, grid, "left") / self.impostor.size
        frr = np.searchsorted(self.genuine, grid, "left") / self.genuine.size
        i = int(np.argmin(np.abs(far - frr)))
        return {"eer": _sig(float((far[i] + frr[i]) / 2)), "cosine": round(float(grid[i]), 4)}


def all_pair_scores(vectors: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> Scores:
    """Every unordered pair of rows (i < j) of L2-normalised ``vectors``; NaN rows skipped.

    ``groups``: identities known to be one person under two labels share a group; their
    cross pairs are neither genuine nor impostor (dropped)."""
    ok = ~np.isnan(vectors[:, 0])
    v, lab = np.ascontiguousarray(vectors[ok], dtype=np.float32), labels[ok]
    grp = (labels if groups is None else groups)[ok]
    gen, imp = [], []
    for start in range(0, len(v), CHUNK):
        block = v[start:start + CHUNK] @ v.T
        rows = np.arange(start, min(start + CHUNK, len(v)))
        upper = np.arange(len(v))[None, :] > rows[:, None]
        same = lab[rows][:, None] == lab[None, :]
        other = grp[rows][:, None] != grp[None, :]
        gen.append(block[upper & same])
        imp.append(block[upper & other])
    return Scores(np.sort(np.concatenate(gen)) if gen else np.zeros(0, np.float32),
                  np.sort(np.concatenate(imp)) if imp else np.zeros(0, np.float32))


def cross_pair_scores(enrolled: np.ndarray, probes: np.ndarray, labels: np.ndarray,
                      groups: np.ndarray | None = None) -> Scores:
    """Clean enrolled photo i against degraded probe j, every i != j (door conditions)."""
    grp = labels if groups is None else groups
    ok_e, ok_p = ~np.isnan(enrolled[:, 0]), ~np.isnan(probes[:, 0])
    idx_p = np.flatnonzero(ok_p)
    p, lab_p = probes[ok_p], labels[ok_p]
    gen, imp = [], []
    for start in range(0, len(enrolled), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(enrolled)))
        rows = rows[ok_e[rows]]
        block = enrolled[rows] @ p.T
        other = idx_p[None, :] != rows[:, None]
        same = labels[rows][:, None] == lab_p[None, :]
        gen.append(block[other & same])
        imp.append(block[grp[rows][:, None] != grp[ok_p][None, :]])
    return Scores(np.sort(np.concatenate(gen)), np.sort(np.concatenate(imp)))
