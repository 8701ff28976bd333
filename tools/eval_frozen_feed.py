"""FROZEN_FEED against stills whose brightness changes, judged as the door judges: from many starts.

    python tools/eval_frozen_feed.py [--seeds 1] [--json out.json]

A track's verdict depends on where it starts (a face that leaves the frame and comes back starts
a new track), and ``tools/eval_liveness.py`` starts each presentation once, so its still tracks
are decided before their exposure changes. Here every presentation is run through the real
engine (YuNet) and the door's quality gate once, and then the door's own N-of-M decision
(``eval_liveness.decide``, ``matching.frames_required`` of ``frames_window`` from the settings:
3 of 5 by default) is taken with FROZEN_FEED alone from every third frame as a new track's start.

SIMULATED attacks, from every photo of ../shared/faces/people (each still re-encoded every frame
with noise sigma 1 and JPEG 85, as an injected feed is):
  still           no change between frames
  eval pattern    eval_liveness's still+exposure (4 % flicker, a 5 % step, gamma 0.95)
  flicker 8 %     the gain alternating 1.00 / 1.08
  ramp +2 %       auto-exposure converging: +2 % a frame
  walk +-5 %      a random walk of +-5 % a frame
  overexposed     a constant 1.6x gain (large clipped areas; nothing changes between frames)
Each attack is counted twice: with the door's quality gate (a presentation whose face the gate
refuses in too many frames is left out: the door refuses it whatever FROZEN_FEED says, and an
attacker would show that still larger), and without it (every photo counted, as if each were
framed to pass the gate; not measured at a larger size).
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_liveness import (  # noqa: E402
    FACES,
    FPS,
    decide,
    door_checks,
    door_videos,
    print_report,
    reencode,
    still_attack,
    still_frame,
)

from facelink.config import load_settings  # noqa: E402
from facelink.device.liveness_frozen import FrozenFeed  # noqa: E402
from facelink.models.engine import FaceEngine  # noqa: E402
from facelink.models.provision import provision  # noqa: E402
from facelink.models.quality import QualityGate  # noqa: E402

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


@dataclass(frozen=True)
class Seen:
    """One frame as the door saw it: the frame, the first face's landmarks, and why the door's
    quality gate refused that face (None: it passed, and FROZEN_FEED judges the frame)."""

    frame: np.ndarray
    landmarks: np.ndarray
    low_quality: str | None = None


@dataclass(frozen=True)
class DoorRule:
    """How the door decides a track: FROZEN_FEED alone, ``required`` of ``window`` frames."""

    frozen: FrozenFeed
    required: int = 3
    window: int = 5


def observe_frames(engine: FaceEngine, frames: list[np.ndarray], gate: QualityGate | None = None) -> list[Seen | None]:
    """Each frame through the door's detector (and its quality gate, when given); None: no face."""
    out: list[Seen | None] = []
    for frame in frames:
        faces = engine.detect(frame)
        out.append(Seen(frame, faces[0].detection.landmarks, gate.reason(faces[0]) if gate else None)
                   if faces else None)
    return out


def from_start(seen: list[Seen | None], start: int, rule: DoorRule,
               limit: int | None = None) -> tuple[str | None, float | None]:
    """The door's first decision, and when (s), for a track that starts at frame ``start``
    (a fresh FROZEN_FEED state; at most ``limit`` frames); (None, None) when it makes none."""
    state = rule.frozen.new_state()
    verdicts: list[dict | None] = []
    for item in seen[start:start + limit if limit else None]:
        if item is None:
            verdicts.append(None)
        elif item.low_quality is not None:  # the door records it and shows it to no check
            verdicts.append({"lowquality": item.low_quality})
        else:
            verdicts.append({"frozen": rule.frozen.observe(state, item.frame, item.landmarks)})
        decision = decide(verdicts, ("frozen",), rule.required, rule.window)
        if decision[0] is not None:  # the track's first decision is the door's
            return decision
    return None, None


Judge = Callable[[list, int], tuple[str | None, float | None]]  # (frames seen, start) -> decision, s


def ungated(seen: list[Seen | None]) -> list[Seen | None]:
    """The same frames with the quality gate's verdicts dropped (every face usable)."""
    return [None if s is None else replace(s, low_quality=None) for s in seen]


def count_attack(presentations: Iterable[list[Seen | None]], judge: Judge) -> dict[str, int]:
    """One attack's row: presentations with a usable face (found, and passed by the quality gate)
    in at least MIN_LEFT frames, each started every STEP frames while MIN_LEFT remain; a start
    counts only when its decision is GRANTED. The others are counted apart (``left out``): the
    door refuses them whatever FROZEN_FEED says, and an attacker would frame them better."""
    row = {"presentations": 0, "granted from a start": 0, "starts": 0, "starts granted": 0, "left out": 0}
    for seen in presentations:
        if sum(s is not None and s.low_quality is None for s in seen) < MIN_LEFT:
            row["left out"] += 1
            continue
        got = [judge(seen, k)[0] == "GRANTED" for k in range(0, len(seen) - MIN_LEFT + 1, STEP)]
        row["presentations"] += 1
        row["starts"] += len(got)
        row["starts granted"] += sum(got)
        row["granted from a start"] += any(got)
    return row


def count_bona_fide(clips: Iterable[list[Seen | None]], judge: Judge, within: int) -> dict[str, Any]:
    """The live clips, started every STEP frames while ``within`` frames remain: a start is
    refused when the door has not GRANTED within those frames (``judge`` is given the start)."""
    out: dict[str, Any] = {"clips": 0, "starts": 0, "starts not granted within 2 s": 0}
    times: list[float] = []
    for seen in clips:
        out["clips"] += 1
        for k in range(0, len(seen) - within + 1, STEP):
            decision, at = judge(seen, k)
            out["starts"] += 1
            if decision == "GRANTED":
                times.append(at)
            else:
                out["starts not granted within 2 s"] += 1
    out["median s to GRANTED"] = round(statistics.median(times), 2) if times else None
    out["p95 s to GRANTED"] = round(float(np.percentile(times, 95)), 2) if times else None
    return out


def door_rule(settings: Any) -> tuple[DoorRule, QualityGate]:
    """How the door judges a track, from ``settings`` as the door reads them
    (``eval_liveness.door_checks``): FROZEN_FEED alone, ``matching``'s N of M, its quality gate."""
    door = door_checks(settings)
    return DoorRule(door.frozen, door.required, door.window), door.gate


def attack_rows(engine: FaceEngine, images: list[np.ndarray], seeds: int, rule: DoorRule, gate: QualityGate,
                kinds: tuple[str, ...] = KINDS) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each attack's row with the door's quality gate, and without it (``count_attack``)."""
    def judge(seen: list[Seen | None], k: int) -> tuple[str | None, float | None]:
        return from_start(seen, k, rule)

    rows: dict[str, dict] = {}
    ungated_rows: dict[str, dict] = {}
    for kind in kinds:
        seen = [observe_frames(engine, attack(kind, photo, np.random.default_rng(seed)), gate)
                for photo in images for seed in range(seeds)]
        rows[kind] = count_attack(seen, judge)
        ungated_rows[kind] = count_attack(map(ungated, seen), judge)
        print(f"{kind}: {rows[kind]}; without the gate {ungated_rows[kind]}", file=sys.stderr)
    return rows, ungated_rows


def bona_fide_row(engine: FaceEngine, clips: Iterable[list[np.ndarray]], rule: DoorRule, gate: QualityGate,
                  within: int) -> dict[str, Any]:
    """The live clips through the door's detector and quality gate (``count_bona_fide``)."""
    seen = (observe_frames(engine, frames, gate) for frames in clips)
    return count_bona_fide(seen, lambda s, k: from_start(s, k, rule, limit=within), within)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=1, help="random seeds per photo and kind")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings = load_settings()
    models = provision(settings.models.models_dir).models_dir
    settings.models.threads = 2
    engine = FaceEngine.from_settings(settings.models)
    rule, gate = door_rule(settings)
    t0 = time.time()
    photos = sorted(p for p in (FACES / "people").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = [img for img in (cv2.imread(str(p)) for p in photos) if img is not None]
    rows, ungated_rows = attack_rows(engine, images, args.seeds, rule, gate)
    within = int(BONA_FIDE_WITHIN_S * FPS)
    bona = bona_fide_row(engine, door_videos(models).values(), rule, gate, within)
    frozen = rule.frozen
    report = {"threshold": frozen.min_change, "live_needed": frozen.live_needed, "comparisons": frozen.comparisons,
              "frames_required": rule.required, "frames_window": rule.window, "quality_gate": "the door's",
              "photos": len(images), "seeds": args.seeds, "attacks": rows,
              "attacks without the quality gate": ungated_rows, "bona fide": bona,
              "seconds": round(time.time() - t0)}
    print(f"| still (SIMULATED, injected; {rule.required} of {rule.window} frames) | the door's quality gate: "
          "GRANTED from some start | starts GRANTED | left out (the gate refuses the face) "
          "| without the gate: GRANTED from some start | starts GRANTED |")
    print("|---|---|---|---|---|---|")
    for kind, r in rows.items():
        u = ungated_rows[kind]
        print(f"| {kind} | {r['granted from a start']} of {r['presentations']} | {r['starts granted']} of "
              f"{r['starts']} | {r['left out']} | {u['granted from a start']} of {u['presentations']} | "
              f"{u['starts granted']} of {u['starts']} |")
    print(f"bona fide ({bona['clips']} clips, two people): {bona['starts not granted within 2 s']} of "
          f"{bona['starts']} starts not GRANTED within 2 s; time to GRANTED median {bona['median s to GRANTED']} s, "
          f"p95 {bona['p95 s to GRANTED']} s")
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
