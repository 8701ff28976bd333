"""Door daemon start-up: time from process start to systemd's READY=1 (what `systemctl start`
waits for), the real `python -m facelink.device.main` process, a private broker on loopback and
an enrolled collection; median over several cold-ish starts (the OS file cache stays warm, as on
a door restarted by systemd).

    python tools/bench_startup.py [--runs 10] [--faces 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from broker import Broker

from facelink.config import load_settings
from facelink.enroll import faces
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.models.engine import FaceEngine
from facelink.models.provision import provision


def _collection(path: Path, engine: FaceEngine, n: int) -> None:
    """A collection of ``n`` faces (random unit vectors: start-up time does not depend on whose)."""
    ctx = Context(Store(path), lambda: engine)
    faces.create_collection(ctx, "door")
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ctx.store.insert_faces([{"face_id": f"00000000-0000-4000-8000-{i:012d}", "collection_id": "door",
                             "image_id": f"img-{i}", "external_image_id": None, "user_id": None,
                             "image_sha256": f"bench:{i}", "bounding_box": {}, "confidence": 99.0,
                             "embedding": v} for i, v in enumerate(vecs)])
    ctx.store.close()


def one_start(work: Path, models_dir: Path, port: int, camera: Path) -> float:
    sock_path = work / "notify.sock"
    sock_path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
    env.update({"NOTIFY_SOCKET": str(sock_path), "FACELINK_MODELS__MODELS_DIR": str(models_dir),
                "FACELINK_STORE__DATABASE": str(work / "facelink.db"), "FACELINK_MATCHING__COLLECTION_ID": "door",
                "FACELINK_MQTT__OUTBOX": str(work / "outbox.db"), "FACELINK_MQTT__PORT": str(port),
                "FACELINK_CAMERA__SOURCE": str(camera), "FACELINK_CAMERA__LOOP": "true"})
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "facelink.device.main"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            message = sock.recv(4096).decode()
            if "READY=1" in message.split("\n"):
                return time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(30)
        sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--faces", type=int, default=1000, help="collection size at the door")
    args = parser.parse_args()
    settings = load_settings()
    models_dir = provision(settings.models.models_dir).models_dir
    engine = FaceEngine.from_settings(settings.models)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _collection(work / "facelink.db", engine, args.faces)
        with Broker(work / "broker") as broker:
            times = [one_start(work, models_dir, broker.port, models_dir / "samples" / "single_face.mp4")
                     for _ in range(args.runs)]
    load_after = os.getloadavg()
    print(f"Door daemon start -> READY=1, {args.runs} starts, collection of {args.faces:,} faces; "
          f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{datetime.now(timezone.utc).date()}; load average {load_before[0]:.1f} / {load_before[1]:.1f} / "
          f"{load_before[2]:.1f} before, {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} after")
    print(f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
