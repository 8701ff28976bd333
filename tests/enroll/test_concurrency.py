"""The door reads while the desk writes; a kill -9 mid-write leaves the database consistent."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import uuid

import numpy as np

from facelink.enroll.feed import KEEP_CHANGES
from facelink.enroll.store import Store


def _rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [{"face_id": str(uuid.uuid4()), "collection_id": "c", "image_id": str(uuid.uuid4()),
             "external_image_id": f"e{seed}-{i}", "user_id": None, "image_sha256": f"{seed}-{i}",
             "bounding_box": {"Width": 0.1, "Height": 0.1, "Left": 0.1, "Top": 0.1},
             "confidence": 99.0, "embedding": v[i]} for i in range(n)]


def _writer(path: str, batches: int, forever: bool) -> None:
    with Store(path) as s:
        i = 0
        while forever or i < batches:
            s.insert_faces(_rows(20, i))
            i += 1


def _reader(path: str, seconds: float, queue) -> None:
    errors, reads = 0, 0
    q = np.ones(128, np.float32) / np.sqrt(128)
    deadline = time.monotonic() + seconds
    with Store(path, readonly=True) as s:
        while time.monotonic() < deadline:
            try:
                s.knn("c", q, 10)
                s.list_faces("c", 0, 50)
                reads += 1
            except Exception:  # noqa: BLE001 - counted and asserted on
                errors += 1
    queue.put((reads, errors))


def test_reader_and_writer_processes(tmp_path):
    path = str(tmp_path / "c.db")
    with Store(path) as s:
        s.insert_collection("c", "test")
    spawn = mp.get_context("spawn")
    q = spawn.Queue()
    w = spawn.Process(target=_writer, args=(path, 40, False))
    r = spawn.Process(target=_reader, args=(path, 4.0, q))
    w.start()
    r.start()
    w.join(120)
    r.join(120)
    reads, errors = q.get(timeout=5)
    assert w.exitcode == 0 and r.exitcode == 0
    assert errors == 0 and reads > 0
    with Store(path) as s:
        assert s.count("faces", "c") == 800
        assert s.query("SELECT count(*) FROM face_vectors")[0][0] == 800


def test_kill_minus_nine_mid_write_is_consistent(tmp_path):
    path = str(tmp_path / "k.db")
    with Store(path) as s:
        s.insert_collection("c", "test")
    w = mp.get_context("spawn").Process(target=_writer, args=(path, 0, True))
    w.start()
    time.sleep(3.0)
    os.kill(w.pid, signal.SIGKILL)
    w.join(10)
    with Store(path) as s:
        assert s.query("PRAGMA integrity_check")[0][0] == "ok"
        faces = s.count("faces", "c")
        assert faces > 0 and faces % 20 == 0  # whole transactions only
        assert s.query("SELECT count(*) FROM face_vectors")[0][0] == faces
        # the feed keeps the newest KEEP_CHANGES rows (a fast writer can exceed that in 3 s)
        assert s.query("SELECT count(*) FROM changes WHERE op = 'add'")[0][0] == min(faces, KEEP_CHANGES)
