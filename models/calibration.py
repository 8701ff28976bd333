"""Fit the cosine -> Similarity mapping on labelled faces, and write it safely.

Procedure (README "What Similarity means"): all genuine and impostor pairs are scored; the
cosine for a false-accept rate is the lowest cosine whose *measured* FAR is at or below it,
where the data holds at least ``MIN_EVENTS`` impostor pairs beyond it; on smaller data it is a
normal fit of the impostor tail, and the fit says so ("extrapolated"). Similarity 99 is put at
``far_at_99`` (1e-5), 80 at ``far_at_80`` (1e-3); by default a re-fit never loosens the door.
The impostor tail (pairs at or above each cosine) is kept with the fit: the door's per-attempt
stranger rate is computed from it (models/risk.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from facelink.config.paths import write_durably
from facelink.errors import InvalidParameterException, ModelError

from .manifest import OVERRIDE_NAME, Calibration, ImpostorTail, toml_loads
from .rates import Scores
from .similarity import similarity_to_cosine

MIN_EVENTS = 10  # impostor pairs beyond a cosine needed to call its FAR measured
TAIL_GRID = tuple(round(0.20 + 0.01 * i, 2) for i in range(61))  # cosine 0.20 .. 0.80


def impostor_tail(scores: Scores) -> ImpostorTail:
    counts = tuple(scores.accepted(c)[0] for c in TAIL_GRID)
    return ImpostorTail(int(scores.impostor.size), TAIL_GRID, counts)


def _erfinv(y: float) -> float:
    """Inverse error function (Newton on math.erf; |y| < 1)."""
    x = 0.0
    for _ in range(100):
        err = math.erf(x) - y
        x -= err / (2 / math.sqrt(math.pi) * math.exp(-x * x))
        if abs(err) < 1e-12:
            break
    return x


def cosine_at(scores: Scores, far: float) -> tuple[float, str]:
    imp = scores.impostor
    if imp.size * far >= MIN_EVENTS:
        t = scores.threshold_for_far(far)
        assert t is not None
        return t, "measured"
    mu, sigma = float(imp.mean()), float(imp.std(ddof=1))
    return mu + math.sqrt(2) * _erfinv(1 - 2 * far) * sigma, "extrapolated (normal tail; too few pairs to measure)"


def fit_calibration(scores: Scores, far_at_99: float = 1e-5, far_at_80: float = 1e-3,
                    floor: Calibration | None = None, data_name: str = "",
                    door_threshold: float | None = None) -> dict[str, Any]:
    """Similarity = 100/(1+exp(-(a*cos+b))) through (cos@far_at_80, 80) and (cos@far_at_99, 99).

    With ``floor`` (the current calibration) each anchor keeps the stricter cosine, and so does
    ``door_threshold`` (the door's ``matching.similarity_threshold``): two anchors alone do not
    hold a Similarity outside 80..99, where a steeper or flatter fit maps a lower cosine (a door
    at 99.5 went from cosine 0.552 to 0.543), so the fit is shifted to the stricter side there.
    ``b`` is rounded down: the written fit is never looser than the cosines it keeps."""
    if scores.impostor.size < MIN_EVENTS or scores.genuine.size < 1:
        raise InvalidParameterException("need at least 10 impostor pairs and one genuine pair to calibrate")
    if not 0 < far_at_99 < far_at_80 < 1:
        raise InvalidParameterException("need 0 < far_at_99 < far_at_80 < 1")
    t80, how80 = cosine_at(scores, far_at_80)
    t99, how99 = cosine_at(scores, far_at_99)
    kept = []
    if floor is not None:
        for sim, t in ((80, t80), (99, t99)):
            if similarity_to_cosine(sim, floor) > t:
                kept.append(sim)
        t80 = max(t80, similarity_to_cosine(80, floor))
        t99 = max(t99, similarity_to_cosine(99, floor))
    l80, l99 = math.log(0.8 / 0.2), math.log(0.99 / 0.01)
    a = round((l99 - l80) / max(t99 - t80, 1e-6), 6)
    b = min(l80 - a * t80, l99 - a * t99)  # both anchors at or above their cosine with the rounded a
    if floor is not None and door_threshold is not None and door_threshold not in (80, 99):  # anchors: held
        p = min(max(door_threshold / 100.0, 1e-12), 1 - 1e-12)
        at_door = math.log(p / (1 - p)) - a * similarity_to_cosine(door_threshold, floor)
        if at_door < b:  # the fit would map the door's threshold to a lower cosine than now
            b = at_door
            kept.append(door_threshold)
    b = math.floor(b * 1e6) / 1e6  # rounded towards stricter: every kept cosine still holds
    t80, t99 = (l80 - b) / a, (l99 - b) / a
    method = f"80 at FAR {far_at_80:g}: {how80}; 99 at FAR {far_at_99:g}: {how99}"
    if kept:
        method += f"; Similarity {'/'.join(f'{k:g}' for k in kept)} kept at the current (stricter) cosine"
    fitted_on = (f"{data_name}: {scores.genuine.size} genuine, {scores.impostor.size} impostor pairs; {method}"
                 ).lstrip(": ")
    return {"a": a, "b": b, "cosine_at_80": round(t80, 4), "cosine_at_99": round(t99, 4),
            "far_at_80": scores.far(t80).to_json(), "far_at_99": scores.far(t99).to_json(),
            "frr_at_80": scores.frr(t80).to_json(), "frr_at_99": scores.frr(t99).to_json(),
            "genuine_pairs": int(scores.genuine.size), "impostor_pairs": int(scores.impostor.size),
            "method": method, "fitted_on": fitted_on, "impostor_tail": impostor_tail(scores)}


# -- writing -----------------------------------------------------------------------------------
def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            raise ModelError(f"cannot write a non-finite number {v!r} to a calibration file")
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=True)  # a JSON string with ASCII escapes is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise ModelError(f"cannot write {type(v).__name__} to a calibration file")


def calibration_toml(entries: dict[str, Calibration]) -> str:
    lines = ["# FaceLink Similarity calibration written by `facelink calibrate --write`.",
             "# Similarity = 100 / (1 + exp(-(a * cosine + b))), per FaceModelVersion.", ""]
    for version, cal in sorted(entries.items()):
        head = f"calibration.{_value(version)}"
        lines += [f"[{head}]", f"a = {_value(cal.a)}", f"b = {_value(cal.b)}", f"fitted_on = {_value(cal.fitted_on)}"]
        if cal.impostor_tail is not None:
            t = cal.impostor_tail
            lines += ["", f"[{head}.impostor_tail]", f"pairs = {_value(t.pairs)}",
                      f"cosine = {_value(t.cosine)}", f"at_or_above = {_value(t.at_or_above)}"]
        lines.append("")
    return "\n".join(lines)


def write_calibration(models_dir: Path, version: str, cal: Calibration) -> Path:
    """Add/replace ``version`` in <models_dir>/calibration.toml: atomic replace, mode 0600,
    other versions kept, the text checked by parsing it back before it replaces anything."""
    from .manifest import read_overrides

    path = Path(models_dir) / OVERRIDE_NAME
    entries = read_overrides(path) if path.is_file() else {}
    entries[version] = cal
    text = calibration_toml(entries)
    back = toml_loads(text)["calibration"][version]
    if (back["a"], back["b"], back["fitted_on"]) != (cal.a, cal.b, cal.fitted_on):
        raise ModelError("calibration file did not read back as written")  # pragma: no cover
    write_durably(path, text.encode())
    return path
