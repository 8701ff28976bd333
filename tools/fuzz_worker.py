"""The worker process of tools/fuzz_images.py: runs one target per request against the real
engine and a real SQLite + sqlite-vec collection, and says how it ended, how long it took and
how much its peak RSS grew. Requests and replies are JSON lines on a private copy of stdout;
everything else the libraries print goes to stderr (the worker log)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

COLLECTION = "fuzz"


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the next reading is this call's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _SkipCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.skipped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "facelink.device.camera" and "skipping" in record.getMessage():
            self.skipped += 1


class Targets:
    def __init__(self, db: Path, models_dir: Path | None) -> None:
        from facelink.config import ModelSettings, load_settings
        from facelink.enroll.context import Context
        from facelink.enroll.store import Store
        from facelink.models.engine import FaceEngine

        ms = ModelSettings(models_dir=models_dir or load_settings().models.models_dir, threads=2)
        self.engine = FaceEngine.from_settings(ms)
        self.store = Store(db)
        self.ctx = Context(self.store, lambda: self.engine)
        self.skips = _SkipCounter()
        logging.getLogger("facelink.device.camera").addHandler(self.skips)

    def setup(self, req: dict) -> dict:
        from facelink.enroll import faces

        if self.store.get_collection(COLLECTION) is None:
            faces.create_collection(self.ctx, COLLECTION)
            faces.index_faces(self.ctx, COLLECTION, req["photo"], "seed-photo")
        return {}

    def detect_faces(self, req: dict) -> dict:
        from facelink.models.operations import detect_faces

        return detect_faces(self.engine, req["path"])

    def index_faces(self, req: dict) -> dict:
        from facelink.enroll.faces import index_faces

        return index_faces(self.ctx, COLLECTION, req["path"], f"case-{req['case']}")

    def search_faces_by_image(self, req: dict) -> dict:
        from facelink.enroll.search import search_faces_by_image

        return search_faces_by_image(self.ctx, COLLECTION, req["path"], face_match_threshold=0)

    def camera_folder(self, req: dict) -> dict:
        """The door's folder source, run by the door's reader thread, to the end of the folder."""
        from facelink.device.camera import IMAGE_SUFFIXES, CameraReader

        before = self.skips.skipped
        reader = CameraReader(req["path"], max_fps=1000).start()
        frames, deadline = 0, time.monotonic() + req.get("deadline_s", 300)
        while time.monotonic() < deadline:
            frame = reader.get(timeout=0.1)
            if frame is not None:
                assert frame.pixels.dtype.name == "uint8" and frame.pixels.ndim == 3, frame.pixels.shape
                frames += 1
            elif reader.end_of_stream.is_set():
                break
        reader.stop()
        files = sum(1 for p in Path(req["path"]).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return {"files": files, "frames": frames, "skipped": self.skips.skipped - before,
                "reopens": reader.reopens, "ended": reader.end_of_stream.is_set()}

    def finish(self, req: dict) -> dict:
        integrity = self.store.query("PRAGMA integrity_check")
        faces = self.store.count("faces", COLLECTION)
        self.store.close()
        return {"integrity": "; ".join(str(r[0]) for r in integrity), "faces": faces}


def handle(targets: Targets, req: dict) -> dict[str, Any]:
    from facelink.errors import FaceLinkError

    measured = _reset_peak()
    rss_before = _status_kib("VmRSS")
    started = time.monotonic()
    try:
        result = getattr(targets, req["op"].replace("-", "_"))(req)
        json.dumps(result, allow_nan=False)  # a valid result is valid JSON: no NaN, no bytes
        # the API's responses (capitalised keys) stay here; the worker's own figures go back
        reply: dict[str, Any] = {"outcome": "ok", **{k: v for k, v in result.items() if k[0].islower()}}
    except FaceLinkError as exc:
        reply = {"outcome": "error", "type": exc.code, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - this is what the fuzzer looks for
        reply = {"outcome": "exception", "type": type(exc).__name__, "message": str(exc)[:500],
                 "traceback": traceback.format_exc()}
    reply["seconds"] = round(time.monotonic() - started, 3)
    if measured:
        reply["rss_growth_mib"] = round(max(0, _status_kib("VmHWM") - rss_before) / 1024, 1)
    return reply


def serve(db: Path, models_dir: Path | None) -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # C libraries' prints must not corrupt the protocol
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    targets = Targets(db, models_dir)
    for line in sys.stdin:
        proto.write(json.dumps(handle(targets, json.loads(line))) + "\n")
    return 0
