"""Cosine similarity -> Rekognition-style Similarity (0-100), a documented monotonic mapping.

Similarity = 100 / (1 + exp(-(a * cosine + b))), with (a, b) fitted per FaceModelVersion and kept
in models/manifest.toml, so that a threshold such as 99 corresponds to a measured false-accept
rate (README: "What Similarity means").
"""

from __future__ import annotations

import math

import numpy as np

from .manifest import Calibration


def cosine_to_similarity(cosine: float | np.ndarray, cal: Calibration) -> float | np.ndarray:
    z = cal.a * np.asarray(cosine, dtype=np.float64) + cal.b
    sim = 100.0 / (1.0 + np.exp(-z))
    return float(sim) if np.ndim(sim) == 0 else sim


def similarity_to_cosine(similarity: float, cal: Calibration) -> float:
    """Inverse mapping: the cosine a Similarity threshold stands for."""
    p = min(max(similarity / 100.0, 1e-12), 1 - 1e-12)
    return (math.log(p / (1 - p)) - cal.b) / cal.a
