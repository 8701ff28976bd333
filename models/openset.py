"""The door's question, measured: per attempt, does a stranger get in, is a badge holder let in
as someone else, or as themself? A door compares the face in front of it with every enrolled
user and grants the best match at or above the threshold, so the stranger risk per attempt grows
with the number of users. Everything here is vectorised over probes x gallery.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .rates import CHUNK, Rate, Scores

GALLERIES = ((10, 30), (100, 10), (299, 3))  # (users enrolled, random draws of who and which photo)
EXTRAPOLATE_TO = (10, 100, 299, 1000, 10000)


def _groups(labels: np.ndarray, found: np.ndarray) -> dict[int, np.ndarray]:
    idx = np.flatnonzero(found)
    return {int(lab): idx[labels[idx] == lab] for lab in np.unique(labels[idx])}


def open_set(vectors: np.ndarray, labels: np.ndarray, cos_t: float, rng: np.random.Generator,
             galleries: tuple[tuple[int, int], ...] = GALLERIES) -> dict[str, Any]:
    """One badge photo per enrolled user; every other photo is one single-frame attempt.

    With every identity enrolled, strangers are measured leave-one-out: each person's photos
    against the badges of all the others (a gallery of G - 1)."""
    found = ~np.isnan(vectors[:, 0])
    groups = _groups(labels, found)
    ids = np.array(sorted(groups))
    out: dict[str, Any] = {}
    for size, draws in galleries:
        g = min(size, len(ids))
        k_str = n_str = k_right = k_wrong = n_enr = 0
        for _ in range(draws):
            enrolled = rng.choice(ids, g, replace=False)
            badges = np.array([rng.choice(groups[int(e)]) for e in enrolled])
            probes = np.setdiff1d(np.flatnonzero(found), badges)
            s = vectors[probes] @ vectors[badges].T
            own = labels[probes][:, None] == enrolled[None, :]
            is_enr = own.any(1)
            if g == len(ids):  # nobody is a stranger: each person against everyone else
                best_other = np.where(own, -np.inf, s).max(1)
                k_str += int((best_other >= cos_t).sum())
                n_str += len(probes)
            else:
                k_str += int((s[~is_enr].max(1) >= cos_t).sum())
                n_str += int((~is_enr).sum())
            se, oe = s[is_enr], own[is_enr]
            best = se.argmax(1)
            granted = se[np.arange(len(se)), best] >= cos_t
            right = oe[np.arange(len(se)), best]
            k_right += int((granted & right).sum())
            k_wrong += int((granted & ~right).sum())
            n_enr += len(se)
        out[str(g)] = {"draws": draws, "stranger_granted": Rate(k_str, n_str).to_json(),
                       "wrong_holder": Rate(k_wrong, n_enr).to_json(),
                       "right_holder": Rate(k_right, n_enr).to_json(),
                       **({"strangers": f"leave-one-out (each against the other {g - 1})"}
                          if g == len(ids) else {})}
    return out


def probe_exceedance(vectors: np.ndarray, labels: np.ndarray, cos_t: float) -> np.ndarray:
    """Per photo: the fraction of other people's photos it scores >= ``cos_t`` against."""
    found = np.flatnonzero(~np.isnan(vectors[:, 0]))
    v, lab = vectors[found], labels[found]
    q = np.zeros(len(v))
    for start in range(0, len(v), CHUNK):
        rows = slice(start, start + CHUNK)
        other = lab[rows][:, None] != lab[None, :]
        q[rows] = ((v[rows] @ v.T >= cos_t) & other).sum(1) / np.maximum(other.sum(1), 1)
    return q


def extrapolate(q: np.ndarray, far: Rate, sizes: tuple[int, ...] = EXTRAPOLATE_TO) -> dict[str, Any]:
    """Stranger rate per attempt for G users from the measured per-comparison distribution:
    per probe 1 - (1 - q_p)^G averaged over probes (keeps look-alikes together), and the
    independent-comparisons bound 1 - (1 - FAR)^G with FAR's 95 % upper limit."""
    hi = far.to_json()["ci95"][1]
    return {str(g): {"per_probe_model": float(f"{np.mean(1 - (1 - q) ** g):.3g}"),
                     "independent": float(f"{1 - (1 - far.value) ** g:.3g}"),
                     "independent_upper95": float(f"{1 - (1 - hi) ** g:.3g}")} for g in sizes}


def multi_photo(vectors: np.ndarray, labels: np.ndarray, cos_t: float, rng: np.random.Generator,
                photos: tuple[int, ...] = (1, 2, 3), fars: tuple[float, ...] = (1e-4, 1e-5),
                draws: int = 2) -> dict[str, Any]:
    """k badge photos per user (best of), people with >= 4 photos; the same probes for every k
    (the photos after the first 3). FAR here is per user compared (a stranger against one
    user's k photos); per attempt it is ~G times that."""
    found = ~np.isnan(vectors[:, 0])
    groups = {k: v for k, v in _groups(labels, found).items() if len(v) > max(photos)}
    ids = sorted(groups)
    gen: dict[int, list[np.ndarray]] = {k: [] for k in photos}
    imp: dict[int, list[np.ndarray]] = {k: [] for k in photos}
    for _ in range(draws):
        perm = {i: rng.permutation(groups[i]) for i in ids}
        probes = np.concatenate([perm[i][max(photos):] for i in ids])
        plab = labels[probes]
        own = plab[:, None] == np.array(ids)[None, :]
        for k in photos:
            user_score = np.full((len(probes), len(ids)), -np.inf, dtype=np.float32)
            for j in range(k):
                user_score = np.maximum(user_score, vectors[probes] @ vectors[[perm[i][j] for i in ids]].T)
            gen[k].append(user_score[own])
            imp[k].append(user_score[~own])
    out: dict[str, Any] = {"users": len(ids), "draws": draws}
    for k in photos:
        s = Scores(np.sort(np.concatenate(gen[k])), np.sort(np.concatenate(imp[k])))
        out[str(k)] = {"tar_at_user_far": {f"{f:g}": s.tar_at_far(f) for f in fars},
                       "at_threshold": {"tar": Rate(s.accepted(cos_t)[1], s.genuine.size).to_json(),
                                        "far": s.far(cos_t).to_json()}}
    return out


def track_fusion(vectors: np.ndarray, labels: np.ndarray, cos_t: float, rng: np.random.Generator,
                 frames: int = 3, tracks: int = 6, fars: tuple[float, ...] = (1e-4, 1e-5)) -> dict[str, Any]:
    """SIMULATED tracks: ``frames`` other photos of a person stand for a track's frames
    (pessimistic: real frames of one walk are far more alike). Methods scored against every
    user's badge photo: one frame, best of N, k of N agreeing (k-th best), mean embedding."""
    found = ~np.isnan(vectors[:, 0])
    groups = {k: v for k, v in _groups(labels, found).items() if len(v) > frames}
    ids = np.array(sorted(groups))
    badges, tr, tlab = [], [], []
    for i in ids:
        perm = rng.permutation(groups[int(i)])
        badges.append(perm[0])
        for _ in range(tracks):
            tr.append(rng.choice(perm[1:], frames, replace=False))
            tlab.append(i)
    tr_idx, tlab_arr = np.array(tr), np.array(tlab)
    per_frame = np.einsum("tfd,gd->tfg", vectors[tr_idx], vectors[np.array(badges)])  # T x F x G
    ranked = np.sort(per_frame, axis=1)[:, ::-1, :]
    mean = vectors[tr_idx].mean(1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    methods = {"1 frame": per_frame[:, 0, :], f"best of {frames}": ranked[:, 0, :],
               **{f"{k} of {frames} agree": ranked[:, k - 1, :] for k in range(2, frames + 1)},
               f"mean embedding of {frames}": mean @ vectors[np.array(badges)].T}
    own = tlab_arr[:, None] == ids[None, :]
    out: dict[str, Any] = {"simulated": True, "users": len(ids), "tracks": len(tr)}
    for name, m in methods.items():
        s = Scores(np.sort(m[own]), np.sort(m[~own]))
        out[name] = {"tar_at_far": {f"{f:g}": s.tar_at_far(f) for f in fars},
                     "at_threshold": {"tar": Rate(s.accepted(cos_t)[1], s.genuine.size).to_json(),
                                      "far": s.far(cos_t).to_json()}}
    return out


def door_report(vectors: np.ndarray, labels: np.ndarray, cos_t: float, far: Rate,
                rng: np.random.Generator) -> dict[str, Any]:
    """``far``: the measured per-comparison FAR at ``cos_t`` (for the independent bound)."""
    return {"open_set": open_set(vectors, labels, cos_t, rng),
            "extrapolated": extrapolate(probe_exceedance(vectors, labels, cos_t), far),
            "multi_photo": multi_photo(vectors, labels, cos_t, rng),
            "track_fusion": track_fusion(vectors, labels, cos_t, rng)}


def sequence_attempts(best_user: np.ndarray, best_score: np.ndarray, cos_t: float, n: int, m: int
                      ) -> list[tuple[str, int | None]]:
    """Replay the door's N-of-M rule (device/decision.py) on one camera's consecutive frames:
    a frame is a match for its best user at or above ``cos_t``, else a no-match; the first user
    with ``n`` matches among the last ``m`` frames is GRANTED, ``n`` no-matches is DENIED; then
    the next frame starts a new attempt. Frames without a face (NaN score) are skipped."""
    out: list[tuple[str, int | None]] = []
    hist: list[int] = []  # user index, or -1 for a no-match
    for user, score in zip(best_user, best_score):
        if np.isnan(score):
            continue
        hist = (hist + [int(user) if score >= cos_t else -1])[-m:]
        matched = [u for u in hist if u >= 0]
        top = max(set(matched), key=matched.count) if matched else None
        if top is not None and matched.count(top) >= n:
            out.append(("GRANTED", top))
            hist = []
        elif hist.count(-1) >= n:
            out.append(("DENIED", None))
            hist = []
    return out
