"""Request latency of `facelink serve` (boto3 over loopback HTTP) beside the CLI path.

A collection of ``--faces`` faces is built first: real faces indexed from ../shared/faces plus
synthetic (simulated) 128-d unit embeddings inserted through the store, so that search runs
over a collection of that size. Then ``--requests`` IndexFaces and SearchFacesByImage calls go
through boto3 -> facelink serve, and ``--cli-requests`` of each through the `facelink` command
(a new process per call: Python start, model load, then the same API function).

    python tools/bench_serve.py [--faces 100000] [--requests 40] [--cli-requests 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "faces"
KEY, SECRET = "AKIABENCHSERVE00001", "bench-secret-0123456789"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def build_collection(db: Path, n: int) -> None:
    from facelink.config import load_settings
    from facelink.enroll import faces
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store
    from facelink.models.engine import FaceEngine

    settings = load_settings()
    with Store(db) as store:
        ctx = Context(store, lambda: FaceEngine.from_settings(settings.models))
        faces.create_collection(ctx, "bench")
        for p in sorted((FACES / "people").glob("*/1.jpg")):
            faces.index_faces(ctx, "bench", p, f"real-{p.parent.name}")
        rng = np.random.default_rng(7)
        done = faces.describe_collection(ctx, "bench")["FaceCount"]
        version = ctx.engine.model_version
        assert version
        while done < n:
            batch = min(5000, n - done)
            v = rng.standard_normal((batch, 128), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            store.insert_faces([{"face_id": str(uuid.uuid4()), "collection_id": "bench", "image_id": str(uuid.uuid4()),
                                 "external_image_id": f"sim-{done + i}", "image_sha256": "simulated",
                                 "bounding_box": {"Width": 0.3, "Height": 0.4, "Left": 0.3, "Top": 0.2},
                                 "confidence": 99.0, "embedding": v[i]} for i in range(batch)])
            done += batch


def start_server(db: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    creds = tmp / "keys.toml"
    creds.write_text(f'[keys.{KEY}]\nsecret = "{SECRET}"\nrequests_per_second = 10000\n')
    creds.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FACELINK_STORE__DATABASE": str(db)}
    proc = subprocess.Popen([sys.executable, "-m", "facelink.enroll.cli", "serve", "--credentials", str(creds),
                             "--port", str(port), "--workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("facelink serve did not start") from None
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--cli-requests", type=int, default=5)
    args = ap.parse_args()

    import boto3

    photos = sorted(p for p in (FACES / "people").glob("*/*.jpg"))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        db = tmp / "bench.db"
        t0 = time.perf_counter()
        build_collection(db, args.faces)
        print(f"collection of {args.faces} faces built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        proc, url = start_server(db, tmp)
        try:
            rek = boto3.client("rekognition", endpoint_url=url, region_name="eu-west-1",
                               aws_access_key_id=KEY, aws_secret_access_key=SECRET)
            data = [p.read_bytes() for p in photos]
            for i in range(3):  # warm-up: engine loaded, connections open
                rek.search_faces_by_image(CollectionId="bench", Image={"Bytes": data[i]}, MaxFaces=10)
            serve: dict[str, list[float]] = {"IndexFaces": [], "SearchFacesByImage": []}
            for i in range(args.requests):
                img = {"Bytes": data[i % len(data)]}
                t = time.perf_counter()
                rek.index_faces(CollectionId="bench", Image=img, ExternalImageId=f"bench-{i}", MaxFaces=1)
                serve["IndexFaces"].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                rek.search_faces_by_image(CollectionId="bench", Image=img, MaxFaces=10, FaceMatchThreshold=80)
                serve["SearchFacesByImage"].append((time.perf_counter() - t) * 1000)
            rek.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        cli: dict[str, list[float]] = {"IndexFaces": [], "SearchFacesByImage": []}
        env = {**os.environ, "FACELINK_STORE__DATABASE": str(db)}
        for i in range(args.cli_requests):
            p = str(photos[i % len(photos)])
            for op, cmd in (("IndexFaces", ["index-faces", "--collection-id", "bench", "--image", p,
                                            "--external-image-id", f"cli-{i}", "--max-faces", "1"]),
                            ("SearchFacesByImage", ["search-faces-by-image", "--collection-id", "bench", "--image", p,
                                                    "--max-faces", "10"])):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "facelink.enroll.cli", *cmd], env=env, check=True,
                               capture_output=True)
                cli[op].append((time.perf_counter() - t) * 1000)
    report = {"faces": args.faces, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
              "serve_ms": {k: {"p50": round(pct(v, 0.5), 1), "p95": round(pct(v, 0.95), 1), "n": len(v)}
                           for k, v in serve.items()},
              "cli_ms": {k: {"p50": round(pct(v, 0.5), 1), "p95": round(pct(v, 0.95), 1), "n": len(v)}
                         for k, v in cli.items()}}
    print("| operation | facelink serve (boto3) p50 / p95 | `facelink` CLI p50 / p95 |")
    print("|---|---|---|")
    for op in serve:
        s, c = report["serve_ms"][op], report["cli_ms"][op]
        print(f"| {op} | {s['p50']:.0f} / {s['p95']:.0f} ms (n={s['n']}) | {c['p50']:.0f} / {c['p95']:.0f} ms (n={c['n']}) |")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
