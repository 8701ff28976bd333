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


def lowest_door_threshold(tail: ImpostorTail, cal: Calibration) -> float:
    """The lowest Similarity (to 0.1) whose per-comparison FAR estimate is within
    ``MAX_DOOR_COMPARISON_FAR`` (the FAR falls as the Similarity rises)."""
    lo, hi = 0.0, 100.0
    while hi - lo > 0.05:
        mid = (lo + hi) / 2
        if per_comparison_far(tail, similarity_to_cosine(mid, cal))[0] > MAX_DOOR_COMPARISON_FAR:
            lo = mid
        else:
            hi = mid
    return math.ceil(hi * 10) / 10


def check_door_threshold(cal: Calibration, threshold: float) -> None:
    """Refuse (``ConfigError``) a door's ``matching.similarity_threshold`` at which more than
    ``MAX_DOOR_COMPARISON_FAR`` of comparisons between two different people match. Without a
    measured impostor distribution nothing can be said: ``stranger_risk`` warns instead."""
    if cal.impostor_tail is None:
        return
    far = per_comparison_far(cal.impostor_tail, similarity_to_cosine(threshold, cal))[0]
    if far > MAX_DOOR_COMPARISON_FAR:
        lowest = lowest_door_threshold(cal.impostor_tail, cal)
        raise ConfigError(
            f"matching.similarity_threshold = {threshold:g} would open the door for strangers: it is below "
            f"{lowest:g}, the lowest Similarity at which at most {MAX_DOOR_COMPARISON_FAR:g} of comparisons "
            f"between two different people match (this FaceModelVersion's calibration). Similarity is on "
            f"a 0-100 scale (default 99)")
