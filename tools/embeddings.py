"""Embeddings of every face in a folder of photos, and a comparison of two such dumps.

Used by tools/arm64_check.sh to prove that the door's CPU (arm64) computes the same
embeddings as x86-64: dump on each machine, then compare face by face.

    python tools/embeddings.py dump ../shared/faces/people out.npz [--precision fp32|int8]
    python tools/embeddings.py compare x86.npz arm64.npz [--min-cosine 0.999]

A face is keyed by the photo's path relative to the folder and its rank (largest first).
``compare`` exits 1 when a face is missing on either side or any cosine is below the minimum.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SUFFIXES = {".jpg", ".jpeg", ".png"}


def dump(folder: Path, out: Path, precision: str) -> int:
    from facelink.config import load_settings
    from facelink.models.engine import FaceEngine
    from facelink.models.image import decode_image

    settings = load_settings().models.model_copy(update={"embedder_precision": precision})
    engine = FaceEngine.from_settings(settings)
    keys, vectors = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES):
        image = decode_image(path).pixels
        for rank, face in enumerate(engine.analyze(image)):
            keys.append(f"{path.relative_to(folder).as_posix()}#{rank}")
            vectors.append(face.embedding)
    np.savez(out, keys=np.array(keys), embeddings=np.stack(vectors).astype(np.float32),
             model_version=np.array(engine.model_version))
    print(f"{len(keys)} faces from {folder} ({engine.model_version}) -> {out}")
    return 0


def compare(a_path: Path, b_path: Path, min_cosine: float) -> int:
    a, b = np.load(a_path), np.load(b_path)
    a_map = dict(zip(a["keys"].tolist(), a["embeddings"]))
    b_map = dict(zip(b["keys"].tolist(), b["embeddings"]))
    missing = sorted(set(a_map) ^ set(b_map))
    common = sorted(set(a_map) & set(b_map))
    cos = np.array([float(np.dot(a_map[k], b_map[k])) for k in common])
    worst = common[int(cos.argmin())] if common else "-"
    ok = not missing and bool(common) and float(cos.min()) >= min_cosine
    print(f"{a['model_version']}: {len(common)} faces compared, cosine min {cos.min():.6f} ({worst}), "
          f"mean {cos.mean():.6f}; faces found on one side only: {missing or 'none'} -> "
          f"{'OK' if ok else 'FAIL'} (minimum {min_cosine})")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("folder", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args()
    if args.cmd == "dump":
        return dump(args.folder, args.out, args.precision)
    return compare(args.a, args.b, args.min_cosine)


if __name__ == "__main__":
    sys.exit(main())
