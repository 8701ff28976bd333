"""Cosine similarity -> Rekognition-style Similarity (0-100), a documented monotonic mapping.

Similarity = 100 / (1 + exp(-(a * cosine + b))), with (a, b) fitted per FaceModelVersion and kept
in models/manifest.toml (models/calibration.py fits them). The false-accept rate a threshold
stands for is measured per comparison on the data named in the manifest's ``fitted_on`` (for the
shipped fit: the CelebA subset, README "What Similarity means"), with its confidence interval;
it is not a property of the formula, and a door's per-attempt stranger rate also grows with the
number of enrolled faces (models/risk.py).
"""

from __future__ import annotations

import math

import numpy as np

from .manifest import Calibration

# Named Similarity levels: code that needs a cosine maps one of these through the FaceModelVersion's
# calibration (never a hard-coded cosine), so it follows any re-fit.
SAME_PERSON_SIMILARITY = 80.0  # Rekognition's default FaceMatchThreshold: "the same person"


def cosine_to_similarity(cosine: float | np.ndarray, cal: Calibration) -> float | np.ndarray:
    z = cal.a * np.asarray(cosine, dtype=np.float64) + cal.b
    sim = 100.0 / (1.0 + np.exp(-z))
    return float(sim) if np.ndim(sim) == 0 else sim


def similarity_to_cosine(similarity: float, cal: Calibration) -> float:
    """Inverse mapping: the cosine a Similarity threshold stands for."""
    p = min(max(similarity / 100.0, 1e-12), 1 - 1e-12)
    return (math.log(p / (1 - p)) - cal.b) / cal.a
