"""The door's own risk: how often a stranger is expected to be GRANTED per attempt.

A door compares the face in front of it with every enrolled face and grants the best match at
or above the threshold, so one attempt is ``comparisons`` = FaceCount comparisons (a user with
k photos adds k). From the calibration's measured impostor tail (per-comparison FAR at each
cosine) the per-attempt rate is 1 - (1 - FAR)^comparisons. Measured on the CelebA subset this
independent-comparisons model is an upper estimate of the real per-attempt rate (README).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from facelink.errors import ConfigError

from .manifest import Calibration, ImpostorTail
from .rates import clopper_pearson
from .similarity import similarity_to_cosine

log = logging.getLogger(__name__)
DEFAULT_MAX_STRANGER_RATE = 1e-4
# A door threshold at which more than one comparison in 100 between two different people matches
# opens for strangers whatever the collection's size: refused, not warned (a Similarity written
# on a 0-1 scale, 0.99 for 99, lands here).
MAX_DOOR_COMPARISON_FAR = 1e-2


def per_comparison_far(tail: ImpostorTail, cosine: float) -> tuple[float, float]:
    """(estimate, 95 % upper limit) of the FAR of one comparison at ``cosine``.

    Between grid points with impostor pairs the count is interpolated log-linearly; where the
    data ran out (no pair at or above) the tail is extrapolated exponentially from the last
    points with >= 3 pairs, and the upper limit is the exact one of the count at the grid point
    below (FAR can only fall as the cosine rises)."""
    cos, cnt, n = tail.cosine, tail.at_or_above, tail.pairs
    below = max((i for i, c in enumerate(cos) if c <= cosine), default=None)
    if below is None:
        return cnt[0] / n, 1.0
    upper = clopper_pearson(cnt[below], n)[1]
    if cos[below] == cosine:
        return cnt[below] / n, upper
    nxt = below + 1 if below + 1 < len(cos) else None
    if nxt is not None and cnt[nxt] > 0:
        f = (cosine - cos[below]) / (cos[nxt] - cos[below])
        est = math.exp(math.log(cnt[below]) * (1 - f) + math.log(cnt[nxt]) * f) / n
        return est, upper
    pts = [(c, math.log(k)) for c, k in zip(cos, cnt) if k >= 3][-6:]
    if len(pts) < 2:
        return cnt[below] / n, upper
    mx = sum(c for c, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    slope = sum((c - mx) * (y - my) for c, y in pts) / max(sum((c - mx) ** 2 for c, _ in pts), 1e-12)
    est = math.exp(my + slope * (cosine - mx)) / n
    return min(est, cnt[below] / n if cnt[below] else upper), upper


def stranger_risk(cal: Calibration, threshold: float, comparisons: int,
                  max_rate: float = DEFAULT_MAX_STRANGER_RATE) -> dict[str, Any]:
    """What `describe-collection` and the daemon report (FaceLink's own names, not Rekognition's)."""
    cos_t = similarity_to_cosine(threshold, cal)
    out: dict[str, Any] = {"SimilarityThreshold": threshold, "Cosine": round(cos_t, 4),
                           "Comparisons": comparisons, "MaxStrangerRate": max_rate}
    if cal.impostor_tail is None:
        out.update(ExpectedStrangerRate=None, Warning="the calibration has no measured impostor distribution: "
                   "re-fit with `facelink calibrate`")
        return out
    far, far_hi = per_comparison_far(cal.impostor_tail, cos_t)
    rate = 1 - (1 - far) ** comparisons
    out.update(PerComparisonFalseAcceptRate=float(f"{far:.3g}"),
               ExpectedStrangerRate=float(f"{rate:.3g}"),
               StrangerRateUpper95=float(f"{1 - (1 - far_hi) ** comparisons:.3g}"),
               ImpostorPairs=cal.impostor_tail.pairs,
               Warning=(f"expected stranger rate per attempt {rate:.2g} exceeds matching.max_stranger_rate "
                        f"{max_rate:g}: raise matching.similarity_threshold or split the collection")
               if rate > max_rate else None)
    return out


def log_stranger_risk(cal: Calibration, matching: Any, comparisons: int, where: str = "door") -> dict[str, Any]:
    """The daemon's call at start and reload (``matching``: the MatchingSettings): log the risk,
    WARNING above matching.max_stranger_rate, and return it for the health report."""
    threshold = matching.similarity_threshold
    risk = stranger_risk(cal, threshold, comparisons, matching.max_stranger_rate)
    if risk.get("Warning"):
        log.warning("%s: %s", where, risk["Warning"])
    else:
        log.info("%s: expected stranger rate per attempt %.2g at Similarity %g with %d enrolled faces",
                 where, risk["ExpectedStrangerRate"] or 0.0, threshold, comparisons)
    return risk


# Without a measured impostor tail the door cannot say where strangers start to match: it refuses
# anything below Similarity 50 rather than accept 0 (the shipped calibrations, which have a tail,
# reach 1 in 100 near 45.5-45.8: 50 is a little above what was measured for them).
UNMEASURED_DOOR_FLOOR = 50.0
# A tail needs this many impostor pairs before the door reads its limit from it (10 pairs at 1 in 100,
# the calibration's MIN_EVENTS): a smaller re-fit counts as unmeasured, and UNMEASURED_DOOR_FLOOR holds.
MIN_DOOR_TAIL_PAIRS = 1000
# Between two grid points further apart than this (calibrate's grid is 0.01) the count is not
# interpolated: the door reads the count of the point below, all it knows is that none were lost.
MAX_INTERPOLATED_GAP = 0.0101


def _pairs_at_or_above(tail: ImpostorTail, cosine: float) -> float:
    """Impostor pairs at or above ``cosine`` as the door reads a tail: exact at a grid point,
    log-linear between two neighbouring points (at most ``MAX_INTERPOLATED_GAP`` apart) that
    both have pairs, and otherwise (the next point has none, a wider gap, past the last point)
    the count of the point below: the count can only fall as the cosine rises, and nothing says
    how fast. Non-increasing in ``cosine`` for a validated tail (models/manifest.py)."""
    cos, cnt = tail.cosine, tail.at_or_above
    below = max(i for i, c in enumerate(cos) if c <= cosine)
    if (cos[below] == cosine or below + 1 == len(cos) or cnt[below + 1] == 0
            or cos[below + 1] - cos[below] > MAX_INTERPOLATED_GAP):
        return float(cnt[below])
    f = (cosine - cos[below]) / (cos[below + 1] - cos[below])
    k = math.exp(math.log(cnt[below]) * (1 - f) + math.log(cnt[below + 1]) * f)
    return min(float(cnt[below]), max(float(cnt[below + 1]), k))  # no float noise outside the two counts


def door_far(tail: ImpostorTail, cosine: float) -> float:
    """The per-comparison FAR the door's threshold check uses: the exact 95 % upper limit of
    the rate of impostor pairs at or above ``cosine`` (:func:`_pairs_at_or_above`, rounded up to
    a whole pair). A small tail cannot show a low rate (with no pair at all above a cosine, 368
    pairs are needed to show 1 in 100). Below the grid's first cosine (or NaN) nothing was
    measured: 1.0. Non-increasing in ``cosine``, so the lowest threshold is well defined."""
    if not cosine >= tail.cosine[0]:  # below the grid, or NaN
        return 1.0
    k = math.ceil(_pairs_at_or_above(tail, cosine))
    return clopper_pearson(min(k, tail.pairs), tail.pairs)[1]


def lowest_door_threshold(tail: ImpostorTail, cal: Calibration) -> float | None:
    """The lowest Similarity on the 0.1 grid whose per-comparison FAR (:func:`door_far`) is within
    ``MAX_DOOR_COMPARISON_FAR`` (the FAR falls as the Similarity rises); None when not even 100 is."""
    def ok(similarity: float) -> bool:
        return door_far(tail, similarity_to_cosine(similarity, cal)) <= MAX_DOOR_COMPARISON_FAR

    if not ok(100.0):
        return None
    lo, hi = 0.0, 100.0
    while hi - lo > 0.005:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if not ok(mid) else (lo, mid)
    grid = math.ceil(round(hi * 10, 6)) / 10  # the first 0.1 step at or above the crossing
    while grid > 0 and ok(round(grid - 0.1, 1)):
        grid = round(grid - 0.1, 1)
    while not ok(grid):
        grid = round(grid + 0.1, 1)
    return grid


def _measured_tail(cal: Calibration) -> ImpostorTail | None:
    """The tail the door reads its limit from: None without one or with fewer than
    ``MIN_DOOR_TAIL_PAIRS`` pairs (then ``UNMEASURED_DOOR_FLOOR`` holds)."""
    tail = cal.impostor_tail
    return tail if tail is not None and tail.pairs >= MIN_DOOR_TAIL_PAIRS else None


def door_floor(cal: Calibration) -> float | None:
    """The lowest ``matching.similarity_threshold`` :func:`check_door_threshold` accepts with
    ``cal`` (None: none is). Assumes a calibration that rises with the cosine."""
    tail = _measured_tail(cal)
    return UNMEASURED_DOOR_FLOOR if tail is None else lowest_door_threshold(tail, cal)


def _remedy(cal: Calibration) -> str:
    """What an operator can do about a calibration the door refuses."""
    if cal.source is None:
        return "re-fit it with `facelink calibrate --write`"
    return (f"it was read from {cal.source}: re-fit it with `facelink calibrate --write` on more labelled "
            "faces, or remove that file to go back to the shipped calibration")


def check_door_threshold(cal: Calibration, threshold: float) -> None:
    """Refuse (``ConfigError``) a door's ``matching.similarity_threshold`` at which more than
    ``MAX_DOOR_COMPARISON_FAR`` of comparisons between two different people may match (the 95 %
    upper limit, :func:`door_far`; below the measured impostor grid counts as more). Without a
    measured impostor distribution, or with one of fewer than ``MIN_DOOR_TAIL_PAIRS`` pairs,
    anything below ``UNMEASURED_DOOR_FLOOR`` is refused (``stranger_risk`` warns about the rest)."""
    scale = "Similarity is on a 0-100 scale (default 99)"
    if not (math.isfinite(cal.a) and math.isfinite(cal.b) and cal.a > 0):
        raise ConfigError(f"this FaceModelVersion's calibration (a = {cal.a:g}, b = {cal.b:g}) does not map a higher "
                          f"cosine to a higher Similarity: {_remedy(cal)}")
    tail = _measured_tail(cal)
    if tail is None:
        if threshold < UNMEASURED_DOOR_FLOOR:
            small = cal.impostor_tail
            why = ("has no measured impostor distribution" if small is None else
                   f"measured only {small.pairs} impostor pairs (fewer than {MIN_DOOR_TAIL_PAIRS}, too few to "
                   f"measure 1 in 100)")
            raise ConfigError(
                f"matching.similarity_threshold = {threshold:g} would open the door for strangers: this "
                f"FaceModelVersion's calibration {why} ({_remedy(cal)}), so nothing below "
                f"{UNMEASURED_DOOR_FLOOR:g} is accepted. {scale}")
        return
    if door_far(tail, similarity_to_cosine(threshold, cal)) > MAX_DOOR_COMPARISON_FAR:
        lowest = lowest_door_threshold(tail, cal)
        if lowest is None:
            raise ConfigError(
                f"matching.similarity_threshold = {threshold:g} is refused: this FaceModelVersion's calibration "
                f"cannot show that at most {MAX_DOOR_COMPARISON_FAR:g} of comparisons between two different "
                f"people match at any Similarity (measured on {tail.pairs} impostor pairs); {_remedy(cal)}")
        raise ConfigError(
            f"matching.similarity_threshold = {threshold:g} would open the door for strangers: it is below "
            f"{lowest:g}, the lowest Similarity at which at most {MAX_DOOR_COMPARISON_FAR:g} of comparisons "
            f"between two different people match (95 % upper limit, this FaceModelVersion's calibration). {scale}")
