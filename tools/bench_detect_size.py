"""What the detector's input size costs and what it changes: the measurement behind the
``models.detect_max_side`` default.

For each size: YuNet's time on a 640x480 door frame (sizes interleaved in one run, medians),
how often the face is found (door video frames, ../shared/faces/people, the CelebA subset),
how far the embedding moves from the one at the largest size (same photo, largest face:
cosine), and the door decision at Similarity 99 on every genuine and impostor pair.

    python tools/bench_detect_size.py [--sizes 640 480 320] [--celeba-people 299] [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from facelink.config import load_settings
from facelink.models.engine import FaceEngine
from facelink.models.image import decode_image

FACES = Path(os.environ.get("FACELINK_TEST_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces"))
SUFFIXES = {".jpg", ".jpeg", ".png"}


def video_frames(path: Path, every: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            frames.append(frame)
        i += 1
    cap.release()
    return frames


def labelled_photos(folder: Path, max_people: int | None) -> list[tuple[str, Path]]:
    people = sorted(p for p in folder.iterdir() if p.is_dir())[:max_people]
    return [(person.name, p) for person in people for p in sorted(person.iterdir())
            if p.suffix.lower() in SUFFIXES]


def largest_embeddings(engine: FaceEngine, images: list[np.ndarray]) -> np.ndarray:
    """Largest face's embedding per image (NaN row where no face was found)."""
    out = np.full((len(images), 128), np.nan, dtype=np.float32)
    for i, img in enumerate(images):
        faces = engine.analyze(img, max_faces=1)
        if faces:
            out[i] = faces[0].embedding
    return out


def pair_decisions(engine: FaceEngine, labels: list[str], emb: np.ndarray) -> tuple[float, int, int, int]:
    """(genuine pairs granted at Similarity 99, genuine pairs, impostor pairs granted, impostor pairs);
    a photo without a face counts as a failed genuine pair and a refused impostor pair."""
    lab = np.array(labels)
    found = ~np.isnan(emb[:, 0])
    e = np.nan_to_num(emb)
    cos = e @ e.T
    granted = (engine.similarity(cos) >= 99.0) & found[:, None] & found[None, :]
    iu = np.triu_indices(len(labels), k=1)
    same = (lab[:, None] == lab[None, :])[iu]
    g = granted[iu]
    return float(g[same].mean()), int(same.sum()), int(g[~same].sum()), int((~same).sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 480, 320])
    parser.add_argument("--celeba-people", type=int, default=299, help="identities of the CelebA subset (0: skip)")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    ms = load_settings().models
    engines = {s: FaceEngine.from_settings(ms.model_copy(update={"detect_max_side": s, "threads": args.threads}))
               for s in args.sizes}
    models = Path(ms.models_dir)
    videos = [models / "samples" / "WolfgangLanger_Pexels.mp4", FACES / "video" / "feat_man.mp4"]
    door = [f for v in videos if v.is_file() for f in video_frames(v, every=4)]
    frame = cv2.resize(door[0], (640, 480))
    sets = {"people": labelled_photos(FACES / "people", None)}
    if args.celeba_people:
        sets[f"CelebA subset ({args.celeba_people} people)"] = labelled_photos(FACES / "celeba", args.celeba_people)
    images = {name: [decode_image(p).pixels for _, p in items] for name, items in sets.items()}

    times: dict[int, list[float]] = {s: [] for s in args.sizes}
    for _ in range(args.rounds):
        for s in args.sizes:
            t = time.perf_counter()
            engines[s].detector.detect(frame)
            times[s].append((time.perf_counter() - t) * 1000)
    load = os.getloadavg()
    ref = args.sizes[0]
    results = {}
    for s in args.sizes:
        door_emb = largest_embeddings(engines[s], door)
        results[s] = {"door": door_emb, **{n: largest_embeddings(engines[s], im) for n, im in images.items()}}

    print(f"Detector input size, {platform.machine()} {os.cpu_count()} CPUs, {args.threads} threads, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) during timing; "
          f"{len(door)} door video frames, " + ", ".join(f"{len(v)} {k} photos" for k, v in sets.items()))
    head = ["detect_max_side", "YuNet on 640x480 (median)", f"door frames: face found / cosine to {ref} (min)"]
    for name in sets:
        head += [f"{name}: found / cosine to {ref} (min)", f"{name}: genuine granted at 99 / impostors granted"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for s in args.sizes:
        row = [str(s), f"{statistics.median(times[s]):.1f} ms"]
        for name in ["door", *sets]:
            emb, base = results[s][name], results[ref][name]
            found = ~np.isnan(emb[:, 0])
            both = found & ~np.isnan(base[:, 0])
            cos = (emb[both] * base[both]).sum(axis=1)
            row.append(f"{found.mean():.1%} / {cos.mean():.4f} ({cos.min():.3f})")
            if name != "door":
                tar, n_gen, fa, n_imp = pair_decisions(engines[s], [lab for lab, _ in sets[name]], emb)
                row.append(f"{tar:.1%} of {n_gen} / {fa} of {n_imp}")
        print("| " + " | ".join(row) + " |")
    ratio = [a / b for a, b in zip(times[args.sizes[-1]], times[ref])]
    print(f"\nYuNet at {args.sizes[-1]} takes {statistics.median(ratio):.2f}x the time at {ref} "
          f"(median of paired ratios over {args.rounds} rounds).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
