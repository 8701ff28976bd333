"""FLAT_FACE on SIMULATED depth: how many faces it refuses and how many crafted prints pass.

    python tools/eval_depth_liveness.py [--prints 600] [--seed 0] [--json out.json]

No depth camera is attached here: everything is synthetic (``depth_synth``), with a RealSense
D4xx's noise (2 mm at 0.5 m growing with distance squared, whole mm, 1 % of pixels missing).
Bona fide: depth from the face mesh of every photo in ../shared/faces/people (25; several are
themselves turned by up to ~25 degrees, and the poses add to that), turned and tipped further
(13 poses up to 30 degrees), at 0.5, 0.8, 1.0 and 1.2 m, the face box jittered by up to 5 %,
YuNet's own landmarks carried onto the surface. Each presentation is 10 frames (2/3 s at the
door's 15 fps), each with new noise, through FLAT_FACE and the door's own decision policy (3
frames of 5: GRANTED, DENIED_SPOOF, or no decision yet), identity assumed matched: only depth
liveness is measured. Attacks (random, --prints of each):
  trimmed fold         a print folded along the nose (20-120 mm, +-30 degrees, rounded creases,
                       tilted), trimmed above the brows, at the sides and chin, held 15-110 mm in
                       front of a body at 0.35-1.3 m; 60 % with a patch that returns no depth
                       (IR-black tape) somewhere around the nose;
  fold cut at the nose the same, its top cut anywhere between the brows and the nose (the eyes
                       cut away: YuNet still finds such faces); and the same held by hand (each
                       frame up to 15 mm nearer or further and 4 degrees more tilted: its
                       scores change from frame to frame);
  taped fold           a print folded along the nose (40-120 mm, +-10 degrees, tilted) with IR-black
                       tape (no depth) on the crease above and below the nose (14-28 mm wide,
                       20-50 mm long, 3-10 mm from the printed nose), 0.35-1.3 m;
  taped fold, outer crease  the same with smaller tape (7-14 x 8-25 mm) 10-16 mm from the nose:
                       the crease near the nose is seen, its outer part is not;
  holed print          a flat print (tilted) with holes at the cheeks, a body 15-110 mm behind,
                       at 0.35-1.3 m;
YuNet's nose landmark is put on the print's nose, moved by up to 0.05 of the box. APCER = prints
GRANTED / prints. A face is refused when DENIED_SPOOF (FLAT_FACE), and waits (no decision) while
its frames do not agree or its depth is too noisy to tell (DEPTH_TOO_NOISY: too far from the
camera; never live, the person is asked to come closer). Also
printed: FLAT_FACE's time per face (observe(), median over the bona fide frames, on this machine
under its current load). Prints FLAT_FACE does not refuse by design (a nose-only island, a
sculpted print or mask) are not generated: README lists them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from depth_synth import (
    BOX,
    box_landmarks,
    holed_print,
    photo_face,
    posed_face,
    realsense,
    taped_fold,
    trimmed_fold,
)
from eval_liveness import decide as door_decision

from facelink.config import load_settings
from facelink.device.decision import DENIED_SPOOF, GRANTED
from facelink.device.liveness import load_face_mesh
from facelink.device.liveness_depth import DepthRelief
from facelink.models.engine import FaceEngine
from facelink.models.provision import provision

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"
POSES = [(0, 0), (10, 0), (-10, 0), (0, 10), (0, -10), (20, 0), (-20, 0), (0, 15), (0, -15),
         (25, 0), (-25, 0), (30, 0), (-30, 0)]
DISTANCES_MM = (500.0, 800.0, 1000.0, 1200.0)
FRAMES = 10  # a presentation: 2/3 s at the door's 15 fps
HELD_MM, HELD_DEG = 15.0, 4.0  # a hand-held print: each frame up to this much nearer or further, and tilted


def decide(check: DepthRelief, frames, box, landmarks,
           times: list[float] | None = None) -> tuple[str | None, tuple[str, ...]]:
    """The door's decision on ``frames`` (GRANTED, DENIED_SPOOF, or None: none yet), identity
    assumed matched, and the scores that failed last; ``times``: each frame's observe() time (s)."""
    state = check.new_state()
    verdicts, failed = [], ()
    for depth in frames:
        start = time.perf_counter()
        verdicts.append({"depth": check.observe(state, depth, box, landmarks)})
        if times is not None:
            times.append(time.perf_counter() - start)
        failed = state.failed or failed
    return door_decision(verdicts, ("depth",))[0], failed


def bona_fide(check: DepthRelief, rng) -> dict:
    settings = load_settings()
    engine = FaceEngine.from_settings(settings.models)
    mesh = load_face_mesh(provision(settings.models.models_dir, tflite=True).models_dir, threads=2)
    outcomes: Counter = Counter()
    total: Counter = Counter()
    by_score: Counter = Counter()
    times: list[float] = []
    photos = sorted(p for p in (FACES / "people").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for path in photos:
        found = photo_face(mesh, engine, cv2.imread(str(path)))
        if found is None:
            continue
        points, landmarks = found
        for yaw, pitch in POSES:
            depth, box, turned = posed_face(points, landmarks, yaw, pitch)
            for distance in DISTANCES_MM:
                jitter = box + rng.uniform(-0.05, 0.05, 4) * box[[2, 3, 2, 3]]
                at = np.where(depth > 0, depth + (distance - 500.0), 0.0)
                decision, failed = decide(check, [realsense(at, rng) for _ in range(FRAMES)], jitter, turned, times)
                turn = max(abs(yaw), abs(pitch))
                key = (f"{distance / 1000:.1f} m", ("0-10" if turn <= 10 else "15-20" if turn <= 20 else "25-30") + " deg more")
                total[key] += 1
                outcomes[key, decision] += 1
                if decision == DENIED_SPOOF:
                    by_score.update(failed)
    rows = {f"{k[0]}, {k[1]}": {"granted": outcomes[k, GRANTED], "refused": outcomes[k, DENIED_SPOOF],
                                "undecided": outcomes[k, None], "of": total[k]} for k in sorted(total)}
    return {"photos": len(photos), "rows": rows, "failed_scores": dict(by_score),
            "ms_per_face": round(1000 * float(np.median(times)), 3)}


def random_print(rng, kind: str):
    base = rng.uniform(350, 1300)
    tilt = (rng.uniform(-25, 25), rng.uniform(-15, 15))
    body = rng.uniform(15, 110)
    if kind.startswith("taped fold"):
        outer = kind.endswith("outer crease")  # the crease near the nose left bare: tape 10-16 mm out
        tape = (rng.uniform(0.04, 0.08), rng.uniform(0.05, 0.15)) if outer else \
            (rng.uniform(0.1, 0.2), rng.uniform(0.12, 0.3))
        gap = rng.uniform(0.12, 0.19) if outer else rng.uniform(0.04, 0.12)
        fold = dict(depth_mm=rng.uniform(40, 120), gap=gap, tape=tape, distance_mm=base, tilt=tilt,
                    angle=rng.uniform(-10, 10))
        return (lambda r: taped_fold(r, **fold)), 0.0
    if kind == "holed print":
        at = (rng.uniform(0.4, 0.7), rng.uniform(0.0, 0.3))
        size = (rng.uniform(0.12, 0.3), rng.uniform(0.12, 0.35))
        return (lambda r: holed_print(r, body, at, size, tilt, distance_mm=base)), 0.0
    top = rng.uniform(-0.8, -0.4) if kind == "trimmed fold" else rng.uniform(-0.4, 0.0)
    offset = rng.uniform(-0.1, 0.1)
    fold = dict(angle=rng.uniform(-30, 30), offset=offset, crease_mm=float(rng.choice([0, 0, 5, 10])))
    patch = None if rng.random() < 0.4 else (rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.4),
                                             rng.uniform(0.06, 0.2), rng.uniform(0.06, 0.2))
    depth_mm, side, bottom = rng.uniform(20, 120), rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0)
    if kind.endswith("hand-held"):  # held by hand: each frame tilted and moved a little
        return (lambda r: trimmed_fold(r, depth_mm, body, side, top, bottom, patch,
                                       base + r.uniform(-HELD_MM, HELD_MM),
                                       (tilt[0] + r.uniform(-HELD_DEG, HELD_DEG), tilt[1] + r.uniform(-HELD_DEG, HELD_DEG)),
                                       **fold)), offset
    return (lambda r: trimmed_fold(r, depth_mm, body, side, top, bottom, patch, base, tilt, **fold)), offset


def attacks(check: DepthRelief, rng, n: int) -> dict:
    out = {}
    for kind in ("trimmed fold", "fold cut at the nose", "taped fold", "taped fold, outer crease", "holed print",
                 "fold cut at the nose, hand-held"):
        granted = 0
        failed: Counter = Counter()
        for _ in range(n):
            make, nose_u = random_print(rng, kind)
            landmarks = box_landmarks((nose_u + rng.uniform(-0.05, 0.05), rng.uniform(0.05, 0.25)))
            frame_rng = np.random.default_rng(int(rng.integers(1 << 31)))
            decision, why = decide(check, [make(frame_rng) for _ in range(FRAMES)], BOX, landmarks)
            granted += decision == GRANTED
            failed.update(why)
        out[kind] = {"granted": granted, "of": n, "failed_scores": dict(failed)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prints", type=int, default=600, help="random prints of each kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not (FACES / "people").is_dir():
        print(f"face photos not found at {FACES / 'people'}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    check = DepthRelief()
    result = {"simulated": True, "bona_fide": bona_fide(check, rng), "attacks": attacks(check, rng, args.prints)}
    print(f"FLAT_FACE on simulated depth (RealSense-like noise), the door's decision over {FRAMES} frames\n")
    print("| bona fide | GRANTED | DENIED_SPOOF (FLAT_FACE) | no decision (waits) | not granted |\n|---|---|---|---|---|")
    for name, row in result["bona_fide"]["rows"].items():
        print(f"| {name} | {row['granted']} / {row['of']} | {row['refused']} | {row['undecided']} | "
              f"{1 - row['granted'] / row['of']:.3f} |")
    print("\n| crafted print (random) | GRANTED | APCER |\n|---|---|---|")
    for name, row in result["attacks"].items():
        print(f"| {name} | {row['granted']} / {row['of']} | {row['granted'] / row['of']:.3f} |")
    print(f"\nscores that refused faces: {result['bona_fide']['failed_scores']}")
    print(f"FLAT_FACE per face (observe, median over the bona fide frames): {result['bona_fide']['ms_per_face']} ms")
    print("scores that refused prints: " + "; ".join(f"{k}: {v['failed_scores']}" for k, v in result["attacks"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
