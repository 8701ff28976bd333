"""NO_BLINK against a print whose eyes are covered for a moment, and the real blinks it must keep.

    python tools/eval_blink_cover.py [--json out.json]

A finger or a strip swiped across a hand-held print's eyes collapses the iris model's eye contour
and reopens it: by the eye aspect ratio alone, a blink. ``device/liveness_blink.py`` counts a
closure as a blink only if both eyes dip and the skin round the eyes (glabella, bridge of the
nose, beside the outer corners) stays as it was (``cover_check``). This tool counts blinks with
the check and without it (``Blink(cover_check=False)``, the rule before 2026-12-06) on the same
face-mesh readings.

SIMULATED attacks: ``eval_liveness.print_attack`` of one photo of each of the 8 people of
../shared/faces/people (5 s at 15 fps), its eyes covered on frames 20-22 (0.2 s) by each of
COVERS -- flat: a rectangle of the print's cheek colour over both eyes (the review's); textured:
the same with blotchy and fine noise; other_skin: a strip cut from another photo's forehead (its
wrinkles and pores), tinted to the cheek; dark_finger: a rounded, shaded, darker finger with soft
edges; thin_strip: a narrower textured strip (eyes only, not the corners' surroundings); swipe:
a textured strip moving across (left 60 %, all, right 60 %); one_eye: a fingertip over one eye;
two_tips: two fingertips, one over each eye, the bridge left bare. The same prints uncovered are
the control (no blink either way).
Bona fide: the sample door videos (``eval_liveness.door_videos``: feat_man.mp4 and the 5 s clips
of WolfgangLanger_Pexels.mp4, 15 fps), and both videos at their own frame rate (more blinks, and
each blink seen at more phases; the same blinks, not new people). Two people: say so beside any
number. The still-point match of every closure that reopened in time is printed, for margins.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_liveness import FACES, FPS, door_videos, load_models, print_attack, print_report  # noqa: E402

from facelink.device.liveness_blink import Blink, BlinkState  # noqa: E402
from facelink.models.engine import FaceEngine  # noqa: E402
from facelink.models.facemesh import EyeReading, FaceMesh  # noqa: E402

PHOTOS = ("obama/1.jpg", "biden/1.jpg", "feat_man/photo.jpg", "pexels_woman/2.jpg", "kit_harington/1.jpg",
          "rose_leslie/1.jpg", "alex_lacamoire/1.jpg", "lin_manuel_miranda/1.png")
COVERED = range(20, 23)  # the frames covered: 0.2 s at 15 fps
Cover = Callable[[np.ndarray, np.ndarray, np.random.Generator, int], np.ndarray]


def _geometry(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(image-left eye, image-right eye, eye distance, eyes' mean row) from YuNet's landmarks."""
    left, right = (lm[0], lm[1]) if lm[0][0] <= lm[1][0] else (lm[1], lm[0])
    return left, right, float(np.linalg.norm(right - left)), float((left[1] + right[1]) / 2)


def cheek(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The print's cheek colour (BGR, float32): beside and below the nose landmark."""
    d = _geometry(lm)[2]
    nose = lm[2]
    return frame[int(nose[1] + 0.1 * d), int(nose[0] + 0.35 * d)].astype(np.float32)


def _paste(frame: np.ndarray, mask: np.ndarray, texture: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float32)[:, :, None]
    return np.clip(frame.astype(np.float32) * (1 - m) + texture * m, 0, 255).astype(np.uint8)


def _strip(shape: tuple[int, ...], lm: np.ndarray, half_h: float = 0.11, beyond: float = 0.45,
           span: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A horizontal band over both eyes (``half_h``, ``beyond``: in eye distances), ``span`` of it."""
    left, right, d, cy = _geometry(lm)
    xa, xb = left[0] - beyond * d, right[0] + beyond * d
    xa, xb = xa + (xb - xa) * span[0], xa + (xb - xa) * span[1]
    mask = np.zeros(shape[:2], np.float32)
    cv2.rectangle(mask, (int(xa), int(cy - half_h * d)), (int(xb), int(cy + half_h * d)), 1.0, -1)
    return mask


def _textured(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
    """Skin of the print's cheek colour with blotchy (sigma 10, blurred) texture."""
    blotch = cv2.GaussianBlur(rng.normal(0, 10, frame.shape).astype(np.float32), (0, 0), 1.2)
    return cheek(frame, lm)[None, None, :] * gain + blotch


def flat(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, phase: int) -> np.ndarray:
    """The review's strip: one flat colour (the cheek's) across both eyes."""
    return _paste(frame, _strip(frame.shape, lm), cheek(frame, lm)[None, None, :])


def textured(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, phase: int) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.normal(0, 14, frame.shape[:2]).astype(np.float32), (0, 0), 1.5)
    noise += rng.normal(0, 5, frame.shape[:2]).astype(np.float32)
    texture = cheek(frame, lm)[None, None, :] * (1 + noise[:, :, None] * 2 / 255.0)
    return _paste(frame, _strip(frame.shape, lm), texture)


_FOREHEAD: list[np.ndarray] = []


def other_skin(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, phase: int) -> np.ndarray:
    """A strip of another photo's forehead (biden/1.jpg: wrinkles, pores), tinted to the cheek."""
    if not _FOREHEAD:
        img = cv2.imread(str(FACES / "people/biden/1.jpg"))
        h, w = img.shape[:2]
        _FOREHEAD.append(img[int(0.095 * h):int(0.118 * h), int(0.5 * w):int(0.72 * w)].astype(np.float32))
    left, right, d, cy = _geometry(lm)
    xa, xb, ya, yb = int(left[0] - 0.45 * d), int(right[0] + 0.45 * d), int(cy - 0.11 * d), int(cy + 0.11 * d)
    patch = cv2.resize(_FOREHEAD[0], (xb - xa, yb - ya))
    patch *= (cheek(frame, lm) / np.maximum(patch.reshape(-1, 3).mean(0), 1.0))[None, None, :]
    out = frame.copy()
    out[ya:yb, xa:xb] = np.clip(patch, 0, 255).astype(np.uint8)
    return out


def dark_finger(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, phase: int) -> np.ndarray:
    """A finger: rounded, shaded like a cylinder, darker than the cheek, soft edges."""
    left, right, d, cy = _geometry(lm)
    mask = np.zeros(frame.shape[:2], np.float32)
    cv2.ellipse(mask, (int((left[0] + right[0]) / 2), int(cy)), (int(0.95 * d), int(0.14 * d)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.02 * d + 0.5)
    rows = np.arange(frame.shape[0], dtype=np.float32)[:, None]
    shade = 0.6 + 0.25 * np.cos(np.clip((rows - cy) / (0.14 * d), -1.5, 1.5))
    texture = cheek(frame, lm)[None, None, :] * shade[:, :, None] * np.ones((1, frame.shape[1], 1), np.float32)
    return _paste(frame, mask, texture + rng.normal(0, 3, frame.shape).astype(np.float32))


def thin_strip(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, phase: int) -> np.ndarray:
    return _paste(frame, _strip(frame.shape, lm, 0.08, 0.3), _textured(frame, lm, rng))


def swipe(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, phase: int) -> np.ndarray:
    span = ((0.0, 0.6), (0.0, 1.0), (0.4, 1.0))[min(phase, 2)]
    return _paste(frame, _strip(frame.shape, lm, 0.12, 0.45, span), _textured(frame, lm, rng))


def one_eye(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, phase: int) -> np.ndarray:
    left, _, d, _ = _geometry(lm)
    mask = np.zeros(frame.shape[:2], np.float32)
    cv2.ellipse(mask, (int(left[0]), int(left[1])), (int(0.3 * d), int(0.15 * d)), 0, 0, 360, 1.0, -1)
    return _paste(frame, mask, _textured(frame, lm, rng, 0.9))


def two_tips(frame: np.ndarray, lm: np.ndarray, rng: np.random.Generator, phase: int) -> np.ndarray:
    left, right, d, _ = _geometry(lm)
    mask = np.zeros(frame.shape[:2], np.float32)
    for eye in (left, right):
        cv2.ellipse(mask, (int(eye[0]), int(eye[1])), (int(0.26 * d), int(0.13 * d)), 0, 0, 360, 1.0, -1)
    return _paste(frame, cv2.GaussianBlur(mask, (0, 0), 1.0), _textured(frame, lm, rng, 0.92))


COVERS: dict[str, Cover] = {"flat": flat, "textured": textured, "other_skin": other_skin,
                            "dark_finger": dark_finger, "thin_strip": thin_strip, "swipe": swipe,
                            "one_eye": one_eye, "two_tips": two_tips}


def covered_print(engine: FaceEngine, photo: np.ndarray, cover: Cover | None, seed: int,
                  n: int = int(5 * FPS)) -> list[np.ndarray]:
    """``eval_liveness.print_attack`` of ``photo`` (background grey 100, ``seed``), its eyes covered
    by ``cover`` on frames 20-22 (where YuNet finds the face)."""
    frames = print_attack(photo, np.full((480, 640, 3), 100, np.uint8), np.random.default_rng(seed), n)
    if cover is None:
        return frames
    rng = np.random.default_rng(11)
    out = []
    for i, px in enumerate(frames):
        faces = engine.detect(px) if i in COVERED else []
        out.append(cover(px, faces[0].detection.landmarks, rng, i - COVERED[0]) if faces else px)
    return out


def readings(engine: FaceEngine, mesh: FaceMesh, frames: list[np.ndarray]) -> list[EyeReading | None]:
    out: list[EyeReading | None] = []
    for px in frames:
        faces = engine.detect(px)
        out.append(mesh.read_eyes(px, faces[0].detection.box, faces[0].detection.landmarks) if faces else None)
    return out


def closures(blink: Blink, seq: list[EyeReading | None], fps: float) -> dict[str, Any]:
    """Blinks counted by ``blink`` over ``seq``, and for every closure that reopened in time its
    verdict ('blink' or why not) and lowest still-point match (the last one: ``last_still``)."""
    state = BlinkState()
    events = []
    for i, r in enumerate(seq):
        blinks, not_blinks = state.blinks, dict(state.not_blinks)
        blink.observe(state, r, i / fps)
        why = [k for k, n in state.not_blinks.items() if n > not_blinks.get(k, 0)]
        if state.blinks > blinks or why:
            verdict = "blink" if state.blinks > blinks else why[0]
            events.append({"frame": i, "verdict": verdict,
                           "still": None if state.last_still is None else round(state.last_still, 3)})
    return {"blinks": state.blinks, "closures": events}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    settings, models, engine, mesh = load_models()
    now, before = Blink(), Blink(cover_check=False)
    report: dict[str, Any] = {"attacks": {}, "bona_fide": {}}

    bona: list[tuple[str, list[np.ndarray], float]] = [(f"{k} (15 fps)", v, FPS) for k, v in door_videos(models).items()]
    for name, path in (("feat_man", FACES / "video/feat_man.mp4"), ("pexels_woman", models / "samples/WolfgangLanger_Pexels.mp4")):
        fps = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) or 30.0
        frames = _all_frames(path)
        clip = int(5 * fps)
        for k in range(0, max(1, len(frames) - clip // 2), clip):
            bona.append((f"{name} clip {k // clip + 1} ({fps:.0f} fps)", frames[k:k + clip], fps))
    for name, frames, fps in bona:
        seq = readings(engine, mesh, frames)
        report["bona_fide"][name] = {"before": closures(before, seq, fps)["blinks"], "now": closures(now, seq, fps)}
        print(name, report["bona_fide"][name], file=sys.stderr)

    for k, photo_name in enumerate(PHOTOS):
        photo = cv2.imread(str(FACES / "people" / photo_name))
        if photo is None:
            continue
        base = covered_print(engine, photo, None, 5 + k)
        base_readings = readings(engine, mesh, base)
        for cname, cover in {"none": None, **COVERS}.items():
            seq = list(base_readings)
            if cover is not None:
                frames = covered_print(engine, photo, cover, 5 + k)
                seq[COVERED[0]:COVERED[-1] + 1] = readings(engine, mesh, frames[COVERED[0]:COVERED[-1] + 1])
            got = {"before": closures(before, seq, FPS)["blinks"], "now": closures(now, seq, FPS)}
            report["attacks"].setdefault(cname, {})[photo_name] = got
        print(f"attacks from {photo_name}", file=sys.stderr)

    print("| cover (SIMULATED, print of 8 photos, eyes covered 0.2 s) | prints with a blink before | now "
          "| lowest still-point match of its closures |")
    print("|---|---|---|---|")
    for cname, per in report["attacks"].items():
        stills = [e["still"] for g in per.values() for e in g["now"]["closures"] if e["still"] is not None]
        print(f"| {cname} | {sum(g['before'] > 0 for g in per.values())} of {len(per)} "
              f"| {sum(g['now']['blinks'] > 0 for g in per.values())} of {len(per)} "
              f"| {min(stills) if stills else '-'} – {max(stills) if stills else '-'} |")
    print("| bona fide (real footage) | blinks before | now | still-point match of its blinks |")
    print("|---|---|---|---|")
    for name, got in report["bona_fide"].items():
        events = got["now"]["closures"]
        print(f"| {name} | {got['before']} | {got['now']['blinks']} | "
              + ", ".join(f"{e['still']} ({e['verdict']})" for e in events) + " |")
    print_report(report, args.json)
    return 0


def _all_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video (its own frame rate)."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


if __name__ == "__main__":
    sys.exit(main())
