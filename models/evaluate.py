"""`facelink evaluate` / `facelink calibrate`: what the door's threshold means, measured.

Input: a folder with one sub-folder per person (people/<name>/*.jpg), or a folder of images
plus an LFW-style pairs CSV (file_x,file_y,Decision with Yes/No). Every image goes through the
door's own pipeline (decode -> detect -> largest face -> align -> embed) once per engine
configuration (cached: models/embed_cache.py); then every pair is scored with chunked matrix
products (models/rates.py) and the door's open-set rule is replayed (models/openset.py).
Every stated rate carries its count, its denominator and a 95 % Clopper-Pearson interval.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelink.errors import InvalidParameterException
from facelink.models import embed_cache, openset
from facelink.models.conditions import CONDITIONS
from facelink.models.manifest import Calibration
from facelink.models.rates import Rate, Scores, all_pair_scores, cross_pair_scores
from facelink.models.similarity import similarity_to_cosine

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SIMILARITIES = (80, 90, 95, 99, 99.5)
FARS = (1e-3, 1e-4, 1e-5, 1e-6)
CONFIGS: dict[str, dict[str, str]] = {
    "default": {},  # the door's own configuration (models.* settings as configured)
    "onnxruntime int8": {"detector_backend": "onnxruntime", "embedder_backend": "onnxruntime",
                         "embedder_precision": "int8"},
    "onnxruntime fp32": {"detector_backend": "onnxruntime", "embedder_backend": "onnxruntime",
                         "embedder_precision": "fp32"},
    "OpenCV reference": {"detector_backend": "opencv", "embedder_backend": "opencv", "embedder_precision": "fp32"},
}


@dataclass(frozen=True)
class Dataset:
    root: Path
    images: list[Path]
    labels: np.ndarray  # identity index per image
    names: list[str]  # identity names, indexed by label
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (i, j, same) from a pairs CSV
    groups: np.ndarray | None = None  # one person filed under several labels shares a group

    @property
    def group(self) -> np.ndarray:
        return self.labels if self.groups is None else self.groups

    @property
    def identity(self) -> dict[Path, str]:
        return {p: self.names[int(lab)] for p, lab in zip(self.images, self.labels)}


def same_person_groups(names: list[str], labels: np.ndarray, csv_path: Path) -> np.ndarray:
    """Read "identity_a,identity_b[,reason]" lines (labelling errors found in the data: one person
    filed under two names); returns a group id per image (union of the listed identities)."""
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    index = {n: i for i, n in enumerate(names)}
    try:
        lines = Path(csv_path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParameterException(f"same-person list {csv_path}: {exc}") from exc
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 2 or line.startswith("#") or cells[0] not in index or cells[1] not in index:
            continue
        parent[root(index[cells[0]])] = root(index[cells[1]])
    return np.array([root(int(lab)) for lab in labels])


def load_dataset(root: Path, pairs_csv: Path | None = None, identities: int | None = None,
                 same_person: Path | None = None) -> Dataset:
    """``identities``: only the first N identity folders (sorted by name), e.g. a fixed subset.
    ``same_person``: identity pairs known to be one person (their cross pairs are dropped)."""
    if not root.is_dir():
        raise InvalidParameterException(f"dataset folder not found: {root}")
    if pairs_csv is not None:
        try:
            with open(pairs_csv, newline="") as f:
                rows = [(r["file_x"].strip(), r["file_y"].strip(), r["Decision"].strip().lower())
                        for r in csv.DictReader(f)]
        except (OSError, KeyError, AttributeError, UnicodeDecodeError, csv.Error) as exc:
            raise InvalidParameterException(f"pairs CSV {pairs_csv}: need file_x,file_y,Decision ({exc})") from exc
        images = sorted({root / p for a, b, _ in rows for p in (a, b)})
        index = {p: i for i, p in enumerate(images)}
        names = sorted({p.parent.name for p in images})
        labels = np.array([names.index(p.parent.name) for p in images])
        i = np.array([index[root / a] for a, _, _ in rows])
        j = np.array([index[root / b] for _, b, _ in rows])
        same = np.array([d in ("yes", "true", "1", "same") for _, _, d in rows])
        return Dataset(root, images, labels, names, (i, j, same))
    folders = [d for d in sorted(root.iterdir()) if d.is_dir()][:identities]
    images, labels, names = [], [], []
    for d in folders:
        photos = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            images += photos
            labels += [len(names)] * len(photos)
            names.append(d.name)
    if len(names) < 2:
        raise InvalidParameterException(f"{root}: need sub-folders for at least two people")
    lab = np.array(labels)
    groups = same_person_groups(names, lab, same_person) if same_person is not None else None
    return Dataset(root, images, lab, names, None, groups)


def embed(data: Dataset, model_settings, *, condition: str = "clean", clean_widths: np.ndarray | None = None,
          workers: int = 1, progress: Callable[[int], None] | None = None,
          cache_dir: Path | None = None) -> embed_cache.Embedded:
    """Every photo through the door's pipeline for this configuration (cached)."""
    from facelink.models.engine import FaceEngine

    ms = model_settings.model_copy(update={"threads": 1}) if workers > 1 else model_settings
    cache = embed_cache.EmbeddingCache(embed_cache.engine_key(ms, condition), cache_dir)
    digests = [embed_cache.file_digest(p) for p in data.images]
    transform = None if condition == "clean" else CONDITIONS[condition]
    return embed_cache.embed_all(lambda: FaceEngine.from_settings(ms), cache, data.images, digests,
                                 transform=transform, clean_widths=clean_widths, workers=workers,
                                 progress=progress)


def scores_of(data: Dataset, vectors: np.ndarray) -> Scores:
    if data.pairs is None:
        return all_pair_scores(vectors, data.labels, data.groups)
    i, j, same = data.pairs
    ok = ~np.isnan(vectors[i, 0]) & ~np.isnan(vectors[j, 0])
    cos = np.einsum("ij,ij->i", vectors[i[ok]], vectors[j[ok]])
    return Scores(np.sort(cos[same[ok]]), np.sort(cos[~same[ok]]))


def threshold_table(scores: Scores, cal: Calibration) -> list[dict[str, Any]]:
    rows = []
    for sim in SIMILARITIES:
        t = similarity_to_cosine(sim, cal)
        rows.append({"similarity": sim, "cosine": round(t, 4), "far": scores.far(t).to_json(),
                     "frr": scores.frr(t).to_json()})
    return rows


def report(data: Dataset, emb: embed_cache.Embedded, cal: Calibration, threshold: float,
           *, door: bool = True, seed: int = 0) -> dict[str, Any]:
    """The full report for one configuration: data size, rates with intervals, the door metric."""
    scores = scores_of(data, emb.vectors)
    if scores.genuine.size == 0 or scores.impostor.size == 0:
        raise InvalidParameterException("need genuine and impostor pairs with faces found to evaluate")
    cos_t = similarity_to_cosine(threshold, cal)
    found = emb.found
    out: dict[str, Any] = {
        "data": {"images": len(data.images), "identities": len(data.names),
                 "people": len(np.unique(data.group)),
                 "genuine_pairs": int(scores.genuine.size), "impostor_pairs": int(scores.impostor.size),
                 "no_face": Rate(int((~found).sum()), len(found)).to_json()},
        "threshold_similarity": threshold, "threshold_cosine": round(cos_t, 4),
        "at_threshold": {"far": scores.far(cos_t).to_json(), "frr": scores.frr(cos_t).to_json()},
        "threshold_table": threshold_table(scores, cal),
        "tar_at_far": {f"{f:g}": scores.tar_at_far(f) for f in FARS},
        "eer": scores.eer(),
        "impostor_cosine": {"mean": round(float(scores.impostor.mean()), 4),
                            "std": round(float(scores.impostor.std()), 4),
                            "max": round(float(scores.impostor[-1]), 4)},
    }
    if door and data.pairs is None:
        out["door"] = openset.door_report(emb.vectors, data.group, cos_t, scores.far(cos_t),
                                          np.random.default_rng(seed))
    return out


def condition_report(data: Dataset, clean: embed_cache.Embedded, degraded: embed_cache.Embedded) -> dict[str, Any]:
    """Clean enrolled photos against degraded probes: TAR at FAR 1e-4, and no-face rate."""
    s = cross_pair_scores(clean.vectors, degraded.vectors, data.labels, data.groups)
    return {"no_face": Rate(int((~degraded.found).sum()), len(degraded.found)).to_json(),
            "genuine_pairs": int(s.genuine.size), "impostor_pairs": int(s.impostor.size),
            "tar_at_far": {f"{f:g}": s.tar_at_far(f) for f in (1e-3, 1e-4)}}


def plot(results: dict[str, tuple[Scores, dict[str, Any]]], out: Path) -> Path:
    """Score histograms and ROC (log FAR) per configuration, the door's threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, roc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    grid = np.linspace(-0.3, 1.0, 1301)
    for name, (s, _r) in results.items():
        hist.hist(s.impostor, bins=65, range=(-0.3, 1), alpha=0.35, density=True, label=f"{name}: different people")
        hist.hist(s.genuine, bins=65, range=(-0.3, 1), alpha=0.35, density=True, label=f"{name}: same person")
        far = 1 - np.searchsorted(s.impostor, grid) / s.impostor.size
        tar = 1 - np.searchsorted(s.genuine, grid) / s.genuine.size
        roc_ax.plot(np.maximum(far, 0.5 / s.impostor.size), tar, label=name)
    first = next(iter(results.values()))[1]
    hist.axvline(first["threshold_cosine"], color="k", linestyle="--",
                 label=f"door threshold (Similarity {first['threshold_similarity']:g})")
    hist.set_xlabel("cosine similarity")
    hist.set_ylabel("density")
    hist.legend(fontsize=7)
    roc_ax.set_xscale("log")
    roc_ax.set_xlabel("false accept rate per comparison")
    roc_ax.set_ylabel("true accept rate")
    roc_ax.set_title(f"{first['data']['impostor_pairs']} impostor pairs, {first['data']['genuine_pairs']} genuine",
                     fontsize=9)
    roc_ax.legend(fontsize=8)
    roc_ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":  # python -m facelink.models.evaluate DIR [...] == facelink evaluate DIR [...]
    import sys

    from facelink.enroll.cli import cli

    cli(["evaluate", *sys.argv[1:]], prog_name="facelink")
