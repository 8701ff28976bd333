"""`facelink evaluate` / `facelink calibrate`: what the door's threshold means, measured.

Input: a folder with one sub-folder per person (people/<name>/*.jpg), or a folder of images
plus an LFW-style pairs CSV (file_x,file_y,Decision with Yes/No). Every image goes through the
door's own pipeline (decode -> detect -> largest face -> align -> embed) for each engine
configuration; scores are cosines, mapped to Similarity with that FaceModelVersion's
calibration.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelink.errors import FaceLinkError, InvalidParameterException
from facelink.models.engine import FaceEngine
from facelink.models.image import decode_image
from facelink.models.manifest import Calibration
from facelink.models.similarity import similarity_to_cosine

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
CONFIGS: dict[str, dict[str, str]] = {
    "onnxruntime int8": {"detector_backend": "onnxruntime", "embedder_backend": "onnxruntime",
                         "embedder_precision": "int8"},
    "onnxruntime fp32": {"detector_backend": "onnxruntime", "embedder_backend": "onnxruntime",
                         "embedder_precision": "fp32"},
    "OpenCV reference": {"detector_backend": "opencv", "embedder_backend": "opencv", "embedder_precision": "fp32"},
}


@dataclass(frozen=True)
class Dataset:
    images: list[Path]
    identity: dict[Path, str]
    pairs: list[tuple[Path, Path, bool]]


def load_dataset(root: Path, pairs_csv: Path | None = None) -> Dataset:
    if not root.is_dir():
        raise InvalidParameterException(f"dataset folder not found: {root}")
    if pairs_csv is not None:
        pairs = []
        with open(pairs_csv, newline="") as f:
            for row in csv.DictReader(f):
                a, b = root / row["file_x"].strip(), root / row["file_y"].strip()
                pairs.append((a, b, row["Decision"].strip().lower() in ("yes", "true", "1", "same")))
        images = sorted({p for a, b, _ in pairs for p in (a, b)})
        return Dataset(images, {p: p.parent.name for p in images}, pairs)
    identity = {p: d.name for d in sorted(root.iterdir()) if d.is_dir()
                for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    images = sorted(identity)
    if len({identity[p] for p in images}) < 2:
        raise InvalidParameterException(f"{root}: need sub-folders for at least two people")
    pairs = [(a, b, identity[a] == identity[b]) for a, b in itertools.combinations(images, 2)]
    return Dataset(images, identity, pairs)


def embed_images(engine: FaceEngine, images: list[Path]) -> dict[Path, np.ndarray | None]:
    """The largest face of each image, exactly as the door embeds it (None: no face / bad file)."""
    out: dict[Path, np.ndarray | None] = {}
    for path in images:
        try:
            faces = engine.analyze(decode_image(path).pixels, max_faces=1)
        except FaceLinkError:
            faces = []
        out[path] = faces[0].embedding if faces else None
    return out


def pair_scores(vecs: dict[Path, np.ndarray | None], pairs: list[tuple[Path, Path, bool]]) -> tuple[np.ndarray, np.ndarray]:
    gen, imp = [], []
    for a, b, same in pairs:
        if vecs.get(a) is None or vecs.get(b) is None:
            continue
        (gen if same else imp).append(float(vecs[a] @ vecs[b]))
    return np.array(gen), np.array(imp)


def rates_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) when scores >= threshold are accepted."""
    far = float((impostor >= threshold).mean()) if impostor.size else float("nan")
    frr = float((genuine < threshold).mean()) if genuine.size else float("nan")
    return far, frr


def roc(genuine: np.ndarray, impostor: np.ndarray) -> dict[str, Any]:
    thresholds = np.unique(np.concatenate([genuine, impostor, [-1.0, 1.01]]))
    far = np.array([(impostor >= t).mean() for t in thresholds])
    tar = np.array([(genuine >= t).mean() for t in thresholds])
    i = int(np.argmin(np.abs(far - (1 - tar))))
    tar_at = {}
    for target in FARS:
        if impostor.size * target < 1:  # the data can't show a rate this low
            tar_at[f"{target:g}"] = None
            continue
        ok = far <= target
        tar_at[f"{target:g}"] = round(float(tar[ok].max()), 4) if ok.any() else 0.0
    return {"eer": round(float((far[i] + 1 - tar[i]) / 2), 4), "eer_threshold_cosine": round(float(thresholds[i]), 4),
            "tar_at_far": tar_at, "curve": {"far": far.tolist(), "tar": tar.tolist()}}


def sequences(vecs: dict[Path, np.ndarray | None], identity: dict[Path, str], threshold: float, n: int, m: int,
              rng: np.random.Generator, count: int = 300) -> dict[str, Any]:
    """N-of-M rule on simulated door sequences: frames drawn from other photos of a person.
    Photos are less alike than consecutive video frames, so this is a pessimistic FRR."""
    by_person: dict[str, list[np.ndarray]] = {}
    for p, v in vecs.items():
        if v is not None:
            by_person.setdefault(identity[p], []).append(v)
    people = [k for k, v in by_person.items() if len(v) >= 2]
    if len(people) < 2:
        return {"sequences": 0}
    res = {"genuine": [0, 0], "impostor": [0, 0]}
    frame_accepts = {"genuine": [0, 0], "impostor": [0, 0]}
    for _ in range(count):
        p = people[rng.integers(len(people))]
        enrolled, *others = by_person[p]
        for kind, pool in (("genuine", others),
                           ("impostor", by_person[people[(people.index(p) + 1 + rng.integers(len(people) - 1)) % len(people)]])):
            frames = [pool[rng.integers(len(pool))] for _ in range(m)]
            hits = sum(float(enrolled @ f) >= threshold for f in frames)
            frame_accepts[kind][0] += hits
            frame_accepts[kind][1] += m
            res[kind][0] += hits >= n
            res[kind][1] += 1
    return {"sequences": count, "rule": f"{n} of {m}",
            "frame_far": round(frame_accepts["impostor"][0] / frame_accepts["impostor"][1], 6),
            "frame_frr": round(1 - frame_accepts["genuine"][0] / frame_accepts["genuine"][1], 6),
            "sequence_far": round(res["impostor"][0] / res["impostor"][1], 6),
            "sequence_frr": round(1 - res["genuine"][0] / res["genuine"][1], 6)}


def user_level(vecs: dict[Path, np.ndarray | None], identity: dict[Path, str], threshold: float,
               enrolled_per_user: int = 2) -> dict[str, Any]:
    """Best of a user's enrolled faces vs their mean embedding, on held-out photos."""
    by_person: dict[str, list[np.ndarray]] = {}
    for p, v in sorted(vecs.items()):
        if v is not None:
            by_person.setdefault(identity[p], []).append(v)
    users = {k: v for k, v in by_person.items() if len(v) > enrolled_per_user}
    if len(users) < 2:
        return {"users": len(users)}
    out: dict[str, Any] = {"users": len(users), "enrolled_per_user": enrolled_per_user}
    for name, score in (("best_of", lambda e, q: float((e @ q).max())),
                        ("mean", lambda e, q: float((e.mean(0) / np.linalg.norm(e.mean(0))) @ q))):
        gen, imp = [], []
        for user, faces in users.items():
            enrolled = np.stack(faces[:enrolled_per_user])
            gen += [score(enrolled, q) for q in faces[enrolled_per_user:]]
            imp += [score(enrolled, q) for other, fs in by_person.items() if other != user for q in fs]
        far, frr = rates_at(np.array(gen), np.array(imp), threshold)
        out[name] = {"far": round(far, 6), "frr": round(frr, 6), "eer": roc(np.array(gen), np.array(imp))["eer"],
                     "genuine_pairs": len(gen), "impostor_pairs": len(imp)}
    return out


def evaluate_engine(engine: FaceEngine, data: Dataset, threshold: float, n: int, m: int) -> dict[str, Any]:
    vecs = embed_images(engine, data.images)
    genuine, impostor = pair_scores(vecs, data.pairs)
    cos_t = similarity_to_cosine(threshold, engine.calibration)
    far, frr = rates_at(genuine, impostor, cos_t)
    curve = roc(genuine, impostor) if genuine.size and impostor.size else {}
    return {"face_model_version": engine.model_version, "images": len(data.images),
            "no_face_fraction": round(sum(v is None for v in vecs.values()) / max(len(vecs), 1), 4),
            "genuine_pairs": int(genuine.size), "impostor_pairs": int(impostor.size),
            "threshold_similarity": threshold, "threshold_cosine": round(cos_t, 4),
            "far_frr_at_threshold": {"far": round(far, 6), "frr": round(frr, 6)},
            "lowest_measurable_far": round(1 / impostor.size, 6) if impostor.size else None,
            **{k: v for k, v in curve.items()},
            "scores": {"genuine": genuine.round(4).tolist(), "impostor": impostor.round(4).tolist()},
            "multi_frame": sequences(vecs, data.identity, cos_t, n, m, np.random.default_rng(0)),
            "user_level": user_level(vecs, data.identity, cos_t)}


def threshold_table(result: dict[str, Any], cal: Calibration) -> list[dict[str, Any]]:
    gen, imp = np.array(result["scores"]["genuine"]), np.array(result["scores"]["impostor"])
    rows = []
    for sim in (80, 90, 95, 98, 99, 99.5, 99.9):
        cos_t = similarity_to_cosine(sim, cal)
        far, frr = rates_at(gen, imp, cos_t)
        rows.append({"similarity": sim, "cosine": round(cos_t, 4), "far": far, "frr": frr})
    return rows


def plot(results: dict[str, dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, roc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in results.items():
        hist.hist(r["scores"]["impostor"], bins=40, range=(-0.3, 1), alpha=0.35, label=f"{name}: different people")
        hist.hist(r["scores"]["genuine"], bins=40, range=(-0.3, 1), alpha=0.35, label=f"{name}: same person")
        far = np.maximum(np.array(r["curve"]["far"]), 1e-7)
        roc_ax.plot(far, r["curve"]["tar"], label=f"{name} (EER {r['eer']:.3f})")
    first = next(iter(results.values()))
    hist.axvline(first["threshold_cosine"], color="k", linestyle="--",
                 label=f"door threshold (Similarity {first['threshold_similarity']:g})")
    hist.set_xlabel("cosine similarity")
    hist.set_ylabel("pairs")
    hist.set_title("Scores: same person vs different people")
    hist.legend(fontsize=7)
    roc_ax.set_xscale("log")
    roc_ax.set_xlabel("false accept rate (a stranger let in)")
    roc_ax.set_ylabel("true accept rate (a badge holder let in)")
    roc_ax.set_title(f"ROC ({first['impostor_pairs']} impostor pairs: FAR below "
                     f"{first['lowest_measurable_far']:.1e} is not measurable)", fontsize=9)
    roc_ax.legend(fontsize=8)
    roc_ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def fit_calibration(genuine: np.ndarray, impostor: np.ndarray, target_far: float = 1e-4,
                    floor: Calibration | None = None) -> dict[str, Any]:
    """Fit Similarity = 100/(1+exp(-(a*cos+b))) so that 99 sits at ``target_far`` and 80 at FAR 1e-2.

    The cosine for a FAR is the larger of the empirical quantile (where the data has enough
    impostor pairs) and a normal fit of the impostor tail (which extrapolates). With ``floor``
    (the current calibration) the fit never loosens the door: each anchor keeps the stricter cosine.
    """
    if impostor.size < 10:
        raise InvalidParameterException("need at least 10 impostor pairs to calibrate")
    mu, sigma = float(impostor.mean()), float(impostor.std(ddof=1))

    def cosine_at(far: float) -> tuple[float, str]:
        z = math.sqrt(2) * _erfinv(1 - 2 * far)
        parametric = mu + z * sigma
        if impostor.size * far >= 10:
            empirical = float(np.quantile(impostor, 1 - far))
            return max(empirical, parametric), "empirical quantile and normal tail"
        return parametric, "normal tail extrapolated"

    t80, how80 = cosine_at(1e-2)
    t99, how99 = cosine_at(target_far)
    if floor is not None:
        t80 = max(t80, similarity_to_cosine(80, floor))
        t99 = max(t99, similarity_to_cosine(99, floor))
    l80, l99 = math.log(0.8 / 0.2), math.log(0.99 / 0.01)
    a = (l99 - l80) / max(t99 - t80, 1e-6)
    b = l80 - a * t80
    far99, frr99 = rates_at(genuine, impostor, t99)
    return {"a": round(a, 6), "b": round(b, 6), "cosine_at_80": round(t80, 4), "cosine_at_99": round(t99, 4),
            "target_far": target_far, "impostor_mean": round(mu, 4), "impostor_std": round(sigma, 4),
            "genuine_pairs": int(genuine.size), "impostor_pairs": int(impostor.size),
            "measured_far_at_99": far99, "measured_frr_at_99": frr99,
            "method": f"80: {how80}; 99: {how99}" + ("; never looser than the current mapping" if floor else "")}


def _erfinv(y: float) -> float:
    """Inverse error function (Newton on math.erf; |y| < 1)."""
    x = 0.0
    for _ in range(100):
        err = math.erf(x) - y
        x -= err / (2 / math.sqrt(math.pi) * math.exp(-x * x))
        if abs(err) < 1e-12:
            break
    return x


if __name__ == "__main__":  # python -m facelink.models.evaluate DIR [...] == facelink evaluate DIR [...]
    import sys

    from facelink.enroll.cli import cli

    cli(["evaluate", *sys.argv[1:]], prog_name="facelink")
