"""FROZEN_FEED against stills whose brightness changes, judged as the door judges: from many starts.

    python tools/eval_frozen_feed.py [--seeds 1] [--json out.json]

A track's verdict depends on where it starts (a face that leaves the frame and comes back starts
a new track), and ``tools/eval_liveness.py`` starts each presentation once, so its still tracks
are decided before their exposure changes. Here every presentation is run through the real
engine (YuNet) once, and then the door's own N-of-M decision (``eval_liveness.decide``, 3 of 5)
is taken with FROZEN_FEED alone from every third frame as a new track's start.

SIMULATED attacks, from every photo of ../shared/faces/people (each still re-encoded every frame
with noise sigma 1 and JPEG 85, as an injected feed is):
  still           no change between frames
  eval pattern    eval_liveness's still+exposure (4 % flicker, a 5 % step, gamma 0.95)
  flicker 8 %     the gain alternating 1.00 / 1.08
  ramp +2 %       auto-exposure converging: +2 % a frame
  walk +-5 %      a random walk of +-5 % a frame
  overexposed     a constant 1.6x gain (large clipped areas; nothing changes between frames)
Bona fide: the sample door videos (feat_man.mp4; WolfgangLanger_Pexels.mp4 from `facelink
models`, cut into 5 s clips), started the same way: a start counts as refused when the door has
not GRANTED within 2 s of it. Two people: say so beside any number. Start points of one
presentation are not independent trials.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_liveness import FACES, FPS, decide, door_videos, print_report, reencode, still_attack, still_frame  # noqa: E402

from facelink.config import load_settings  # noqa: E402
from facelink.device.liveness_frozen import FrozenFeed  # noqa: E402
from facelink.models.engine import FaceEngine  # noqa: E402
from facelink.models.provision import provision  # noqa: E402

N_FRAMES = 45  # each attack presentation (3 s)
STEP = 3  # a new track's start every this many frames
MIN_LEFT = 9  # ... while this many frames remain (a still is decided within ~6)
BONA_FIDE_WITHIN_S = 2.0
BACKGROUND = np.full((360, 640, 3), 100, np.uint8)
KINDS = ("still", "eval pattern", "flicker 8 %", "ramp +2 %", "walk +-5 %", "overexposed")


def attack(kind: str, photo: np.ndarray, rng) -> list[np.ndarray]:
    """SIMULATED: the still of ``photo`` with the brightness of ``kind``, N_FRAMES frames."""
    if kind == "eval pattern":
        return still_attack(photo, BACKGROUND, rng, N_FRAMES, exposure=True)
    img = still_frame(photo, BACKGROUND)
    n = N_FRAMES
    gains = {"still": [1.0] * n, "flicker 8 %": [1.0 + 0.08 * (i % 2) for i in range(n)],
             "ramp +2 %": [1.02 ** i for i in range(n)],
             "walk +-5 %": list(np.cumprod(1 + rng.choice([-0.05, 0.05], n))),
             "overexposed": [1.6] * n}[kind]
    return [reencode(img * g, rng) for g in gains]


def landmarks_of(engine: FaceEngine, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    out = []
    for frame in frames:
        faces = engine.detect(frame)
        out.append((frame, faces[0].detection.landmarks) if faces else None)
    return out


def from_start(seen: list, start: int, frozen: FrozenFeed, limit: int | None = None) -> tuple[str | None, float | None]:
    """The door's decision (FROZEN_FEED only) for a track that starts at frame ``start``."""
    state = frozen.new_state()
    verdicts: list[dict | None] = []
    for item in seen[start:start + limit if limit else None]:
        verdicts.append(None if item is None else {"frozen": frozen.observe(state, *item)})
        decision = decide(verdicts, ("frozen",))
        if decision[0] is not None:  # the track's first decision is the door's
            return decision
    return None, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=1, help="random seeds per photo and kind")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings = load_settings()
    models = provision(settings.models.models_dir).models_dir
    settings.models.threads = 2
    engine = FaceEngine.from_settings(settings.models)
    frozen = FrozenFeed()
    t0 = time.time()
    photos = sorted(p for p in (FACES / "people").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows: dict[str, dict] = {}
    for kind in KINDS:
        granted = starts = presentations = granted_presentations = 0
        for path in photos:
            photo = cv2.imread(str(path))
            if photo is None:
                continue
            for seed in range(args.seeds):
                seen = landmarks_of(engine, attack(kind, photo, np.random.default_rng(seed)))
                if sum(s is not None for s in seen) < MIN_LEFT:
                    continue
                got = [from_start(seen, k, frozen)[0] for k in range(0, len(seen) - MIN_LEFT + 1, STEP)]
                presentations += 1
                starts += len(got)
                granted += sum(d == "GRANTED" for d in got)
                granted_presentations += any(d == "GRANTED" for d in got)
        rows[kind] = {"presentations": presentations, "granted from a start": granted_presentations,
                      "starts": starts, "starts granted": granted}
        print(f"{kind}: {rows[kind]}", file=sys.stderr)
    videos = door_videos(models)
    within = int(BONA_FIDE_WITHIN_S * FPS)
    bona = {"clips": 0, "starts": 0, "starts not granted within 2 s": 0, "seconds to GRANTED": []}
    for frames in videos.values():
        seen = landmarks_of(engine, frames)
        bona["clips"] += 1
        for k in range(0, len(seen) - within + 1, STEP):
            decision, at = from_start(seen, k, frozen, limit=within)
            bona["starts"] += 1
            if decision == "GRANTED":
                bona["seconds to GRANTED"].append(at)
            else:
                bona["starts not granted within 2 s"] += 1
    times = bona.pop("seconds to GRANTED")
    bona["median s to GRANTED"] = round(statistics.median(times), 2) if times else None
    bona["p95 s to GRANTED"] = round(float(np.percentile(times, 95)), 2) if times else None
    report = {"threshold": frozen.min_change, "live_needed": frozen.live_needed, "comparisons": frozen.comparisons,
              "photos": len(photos), "seeds": args.seeds, "attacks": rows, "bona fide": bona,
              "seconds": round(time.time() - t0)}
    print("| still (SIMULATED, injected) | presentations | GRANTED from some start | starts GRANTED |")
    print("|---|---|---|---|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['presentations']} | {r['granted from a start']} | {r['starts granted']} of {r['starts']} |")
    print(f"bona fide ({bona['clips']} clips, two people): {bona['starts not granted within 2 s']} of "
          f"{bona['starts']} starts not GRANTED within 2 s; time to GRANTED median {bona['median s to GRANTED']} s, "
          f"p95 {bona['p95 s to GRANTED']} s")
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
