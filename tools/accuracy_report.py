"""README "Accuracy" and "What Similarity means" figures, measured (not installed; run from the checkout):

    .venv/bin/python tools/accuracy_report.py [--celeba ../shared/faces/celeba] [--out var/accuracy]

Embeds the CelebA subset with every configuration and door condition (cached in the user data
dir), replays the door's rules on it and on the two sample door videos, fits the calibration
per FaceModelVersion, and prints markdown tables plus the manifest's calibration TOML. The full
JSON goes to <out>/report.json (outside git: var/ is ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from facelink.config import load_settings
from facelink.models import embed_cache, openset
from facelink.models import evaluate as ev
from facelink.models.calibration import calibration_toml, fit_calibration
from facelink.models.engine import FaceEngine, choose
from facelink.models.manifest import Calibration, calibration_for
from facelink.models.similarity import similarity_to_cosine

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"
SAME_PERSON = ROOT / "tools" / "data" / "celeba_same_person.csv"
CONFIG_NAMES = ("default", "onnxruntime int8", "OpenCV reference")
CONDITION_NAMES = ("face60", "face80", "jpeg40", "grey", "blur")


def _r(x: dict | None, pct: bool = False) -> str:
    if x is None:
        return "not measurable"
    f = (lambda v: f"{100 * v:.1f} %") if pct else (lambda v: f"{v:.2g}")
    return f"{f(x['rate'])} [{f(x['ci95'][0])}, {f(x['ci95'][1])}] ({x['count']}/{x['of']})"


def embed_video(ms, path: Path) -> np.ndarray:
    """Largest face of every frame (NaN: none), cached like photos."""
    digest = embed_cache.file_digest(path)
    cache = embed_cache.EmbeddingCache({**embed_cache.engine_key(ms, "video"), "video": digest})
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    keys = [f"{i:08d}" for i in range(len(frames))]
    if any(k not in cache.rows for k in keys):
        engine = FaceEngine.from_settings(ms)
        for k, frame in zip(keys, frames):
            faces = engine.analyze(frame, max_faces=1)
            cache.rows[k] = ((faces[0].embedding, float(faces[0].detection.box[2])) if faces
                             else (np.full(128, np.nan, np.float32), 0.0))
        cache.save()
    return np.stack([cache.rows[k][0] for k in keys])


def sequences(data, emb, ms, cos_t: float, n: int, m: int, draws: int = 5) -> dict:
    """The two sample door videos: as strangers to a CelebA gallery (one badge per person), and
    as badge holders enrolled with one photo beside it."""
    videos = {"feat_man": (FACES / "video" / "feat_man.mp4", FACES / "people" / "feat_man" / "photo.jpg"),
              "pexels_woman": (Path(ms.models_dir) / "samples" / "WolfgangLanger_Pexels.mp4",
                               FACES / "people" / "pexels_woman" / "1.jpg")}
    engine = FaceEngine.from_settings(ms)
    rng = np.random.default_rng(0)
    groups = openset._groups(data.group, emb.found)
    out = {}
    for name, (video, badge_photo) in videos.items():
        if not video.is_file():
            continue
        frames = embed_video(ms, video)
        from facelink.models.image import decode_image

        badge = engine.analyze(decode_image(badge_photo).pixels, max_faces=1)[0].embedding
        res = {"frames": len(frames), "frames_with_face": int((~np.isnan(frames[:, 0])).sum()),
               "stranger": {"attempts": 0, "granted": 0, "frames": 0, "frames_matched": 0},
               "holder": {"attempts": 0, "right": 0, "wrong": 0, "frames": 0, "frames_right": 0}}
        ok = ~np.isnan(frames[:, 0])
        for _ in range(draws):
            gallery = np.stack([emb.vectors[rng.choice(v)] for v in groups.values()])
            s = np.where(ok[:, None], np.nan_to_num(frames) @ gallery.T, np.nan)
            best, score = np.nanargmax(np.nan_to_num(s, nan=-2), 1), np.nanmax(np.nan_to_num(s, nan=-2), 1)
            score = np.where(ok, score, np.nan)
            att = openset.sequence_attempts(best, score, cos_t, n, m)
            st = res["stranger"]
            st["attempts"] += len(att)
            st["granted"] += sum(k == "GRANTED" for k, _ in att)
            st["frames"] += int(ok.sum())
            st["frames_matched"] += int((score[ok] >= cos_t).sum())
            full = np.vstack([gallery, badge[None, :]])
            s2 = np.nan_to_num(frames) @ full.T
            best2, score2 = s2.argmax(1), np.where(ok, s2.max(1), np.nan)
            att2 = openset.sequence_attempts(best2, score2, cos_t, n, m)
            h = res["holder"]
            h["attempts"] += len(att2)
            h["right"] += sum(k == "GRANTED" and u == len(gallery) for k, u in att2)
            h["wrong"] += sum(k == "GRANTED" and u != len(gallery) for k, u in att2)
            h["frames"] += int(ok.sum())
            h["frames_right"] += int(((best2 == len(gallery)) & (score2 >= cos_t))[ok].sum())
        out[name] = res
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--celeba", type=Path, default=FACES / "celeba")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "accuracy")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    settings = load_settings()
    threshold = settings.matching.similarity_threshold
    data = ev.load_dataset(args.celeba, same_person=SAME_PERSON)
    raw = ev.load_dataset(args.celeba)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "configs": {}, "fits": {}}
    embedded = {}
    for name in CONFIG_NAMES:
        ms = settings.models.model_copy(update=ev.CONFIGS[name])
        t0 = time.monotonic()
        emb = ev.embed(data, ms, workers=args.workers)
        version = choose(ms.detector_backend, ms.embedder_backend, ms.embedder_precision, list(ms.providers)).model_version
        cal = calibration_for(version, ms.models_dir)
        r = ev.report(data, emb, cal, threshold)
        r["face_model_version"], r["embed_s"] = version, round(time.monotonic() - t0, 1)
        r["as_labelled_at_threshold"] = ev.report(raw, emb, cal, threshold, door=False)["at_threshold"]
        report["configs"][name] = r
        embedded[name] = (ms, emb)
        scores = ev.scores_of(data, emb.vectors)
        fit = fit_calibration(scores, 1e-5, 1e-3, cal, data_name="CelebA subset, 299 identities (293 people)")
        tail = fit.pop("impostor_tail")
        report["fits"][name] = {**fit, "version": version, "toml": calibration_toml(
            {version: Calibration(fit["a"], fit["b"], fit["fitted_on"], tail)})}
        print(f"{name}: embedded in {r['embed_s']} s", file=sys.stderr)
    ms0, clean = embedded["default"]
    report["conditions"] = {}
    for c in CONDITION_NAMES:
        deg = ev.embed(data, ms0, condition=c, clean_widths=clean.face_width, workers=args.workers)
        report["conditions"][c] = ev.condition_report(data, clean, deg)
    cal0 = calibration_for(report["configs"]["default"]["face_model_version"], ms0.models_dir)
    m = settings.matching
    report["sequences"] = sequences(data, clean, ms0, similarity_to_cosine(threshold, cal0),
                                    m.frames_required, m.frames_window)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print_markdown(report)
    return 0


def print_markdown(rep: dict) -> None:
    d = rep["configs"]["default"]
    print(f"data: {d['data']}")
    print("\n| Similarity | cosine | FAR per comparison [95 % CI] (count/pairs) | FRR [95 % CI] |\n|---|---|---|---|")
    for row in d["threshold_table"]:
        print(f"| {row['similarity']} | {row['cosine']} | {_r(row['far'])} | {_r(row['frr'], True)} |")
    print("\n| configuration | no face | FAR at 99 | FRR at 99 | TAR@FAR1e-3 | TAR@FAR1e-4 | TAR@FAR1e-5 | EER |\n|---|---|---|---|---|---|---|---|")
    for name, r in rep["configs"].items():
        t = r["tar_at_far"]
        print(f"| {name} | {_r(r['data']['no_face'], True)} | {_r(r['at_threshold']['far'])} | "
              f"{_r(r['at_threshold']['frr'], True)} | " + " | ".join(
                  f"{_r(t[k]['tar'], True)} @cos {t[k]['cosine']}" for k in ("0.001", "0.0001", "1e-05"))
              + f" | {r['eer']['eer']} |  as labelled FAR@99: {_r(r['as_labelled_at_threshold']['far'])}")
    for name, r in rep["configs"].items():
        print(f"\n{name} open set:\n| G | stranger granted | wrong holder | right holder |\n|---|---|---|---|")
        for g, v in r["door"]["open_set"].items():
            print(f"| {g} | {_r(v['stranger_granted'])} | {_r(v['wrong_holder'])} | {_r(v['right_holder'], True)} |")
        print("extrapolated:", json.dumps(r["door"]["extrapolated"]))
    print("\nmulti photo:", json.dumps(d["door"]["multi_photo"]))
    print("\ntrack fusion:", json.dumps(d["door"]["track_fusion"]))
    print("\nconditions:")
    for c, v in rep["conditions"].items():
        print(f"| {c} | {_r(v['no_face'], True)} | {_r((v['tar_at_far']['0.0001'] or {}).get('tar'), True)} |")
    print("\nsequences:", json.dumps(rep["sequences"]))
    for name, f in rep["fits"].items():
        print(f"\nfit {name}: cos80 {f['cosine_at_80']} cos99 {f['cosine_at_99']} FAR99 {_r(f['far_at_99'])} "
              f"FAR80 {_r(f['far_at_80'])}\n{f['toml']}")


if __name__ == "__main__":
    sys.exit(main())
