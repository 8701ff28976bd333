"""A live camera whose read hangs — here a real IP camera's MJPEG stream over HTTP that stops
sending with its connection open, which leaves OpenCV's ``read()`` blocked — is stalled after
``camera.stall_s``: health says ``camera_connected: false``, an ERROR says why (without the
camera's URL, which may carry a password), and the camera is opened again on a new reader, after
which the door decides again. Before, the door sat locked with ``camera_connected: true``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import Watcher

FAST = {"matching__frames_required": 1, "matching__frames_window": 1, "matching__cooldown_s": 0,
        "matching__track_max_age_s": 0, "liveness__enabled": "false"}


class MjpegCamera:
    """An IP camera's MJPEG stream on a loopback port: its first connection stops sending (the
    socket stays open) once ``stall`` is set; later connections stream once ``resume`` is set."""

    def __init__(self, jpeg: bytes) -> None:
        self.stall, self.resume, self.closing = threading.Event(), threading.Event(), threading.Event()
        self.connections = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                camera.connections += 1
                first = camera.connections == 1
                if not first:
                    camera.resume.wait()
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n"
                while not camera.closing.is_set():
                    if first and camera.stall.is_set():
                        camera.closing.wait(0.1)  # connection open, nothing sent: the reader's read hangs
                        continue
                    try:
                        self.wfile.write(part)
                        self.wfile.flush()
                    except OSError:
                        return
                    camera.closing.wait(0.05)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"

    def close(self) -> None:
        self.closing.set()
        self.resume.set()
        self.server.shutdown()
        self.server.server_close()


def watching(reader) -> tuple[list[str], Callable[[], None]]:
    """What ``reader.watch`` says, and a call that watches it once now, as the door's loop does."""
    said: list[str] = []

    def watched() -> None:
        if (message := reader.watch(time.monotonic())) is not None:
            said.append(message)
    return said, watched


@pytest.fixture()
def reader_threads(monkeypatch):
    """While the returned event is clear, no camera reader thread can start (``RuntimeError: can't
    start new thread``, as in a process out of threads or memory); set, they start again."""
    from facelink.device import camera as camera_mod

    class Unstartable(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    can_start = threading.Event()
    reader_thread = camera_mod.CameraReader._reader
    monkeypatch.setattr(camera_mod.CameraReader, "_reader",
                        lambda self: reader_thread(self) if can_start.is_set() else Unstartable())
    return can_start


@pytest.fixture()
def mjpeg_camera(faces_dir):
    camera = MjpegCamera((faces_dir / "people/obama/2.jpg").read_bytes())
    yield camera
    camera.close()


def test_a_camera_whose_read_hangs_is_reported_and_opened_again(tmp_path, broker, faces_dir, enroll,
                                                                start_door, mjpeg_camera):
    enroll(faces_dir, "obama", "1.jpg")
    watcher = Watcher(broker.port, ["facelink/+/decision", "facelink/+/health"], client_id="stall-watcher")
    door = start_door(broker.port, mjpeg_camera.url, camera__stall_s="2", **FAST)

    def decided(kind: str) -> list[dict]:
        return [d for d in watcher.payloads("/decision") if d["decision"] == kind]

    assert door.wait_for(lambda: decided("GRANTED"), 90), door.log()
    assert mjpeg_camera.connections == 1
    mjpeg_camera.stall.set()
    assert door.wait_for(lambda: decided("ERROR"), 30), door.log()
    (error,) = decided("ERROR")
    assert "stopped delivering frames" in error["reason"] and "camera.stall_s = 2" in error["reason"]
    assert "127.0.0.1" not in error["reason"]  # a camera URL may carry a password: never published
    granted_before = len(decided("GRANTED"))
    assert watcher.wait_for(lambda: any(h["camera_connected"] is False and h["camera_stalls"] == 1
                                        for h in watcher.payloads("/health")), 10)
    mjpeg_camera.resume.set()
    # the new reader's connection streams: the door decides again, and says the camera is back
    assert door.wait_for(lambda: len(decided("GRANTED")) > granted_before + 2, 60), door.log()
    assert mjpeg_camera.connections == 2
    assert watcher.wait_for(lambda: (h := watcher.payloads("/health")[-1])["camera_connected"] is True
                            and h["camera_stalls"] == 1, 10)
    assert len(decided("ERROR")) == 1  # one stall, one ERROR
    assert door.stop() == 0, door.log()
    watcher.close()


class HangingCamera:
    """An MJPEG camera each of whose connections sends a few frames and then hangs (socket open,
    nothing sent) until the test ``release``s it (closes it: the reader's read returns)."""

    def __init__(self, jpeg: bytes, frames: int = 3) -> None:
        self.closing = threading.Event()
        self.released: list[threading.Event] = []
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                release = threading.Event()
                camera.released.append(release)
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n"
                for _ in range(frames):
                    self.wfile.write(part)
                    self.wfile.flush()
                while not (release.is_set() or camera.closing.is_set()):
                    release.wait(0.1)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"

    @property
    def connections(self) -> int:
        return len(self.released)

    def release(self, k: int) -> None:
        self.released[k].set()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def test_hung_readers_are_bounded_and_a_returned_one_lets_the_camera_open_again(faces_dir):
    """A camera that hangs on every connection: each stall abandons its reader and opens a new
    one until ``max_hung`` readers hang; then none is opened (no thread and capture per stall
    without end) and the watch says so; once a hung read returns, the camera is opened again."""
    import time

    from facelink.device.camera import CameraReader
    from tests.waiting import wait_until

    camera = HangingCamera((faces_dir / "people/obama/2.jpg").read_bytes())
    reader = CameraReader(camera.url, stall_s=1.0, max_hung=2).start()
    said, watched = watching(reader)

    try:
        assert wait_until(lambda: (watched(), reader.stalls == 2)[1], 30)
        assert reader.hung_readers() == 2 and camera.connections == 2
        assert len(said) == 1 and said[0].endswith("opened again on a new reader")
        assert "2 readers hang" in reader.fault  # said as a fault: the door repeats it every 30 s
        assert "127.0.0.1" not in said[0] + reader.fault  # never the source: a URL may carry a password
        for later in (10.0, 100.0, 1000.0):  # however long it stays so: no third reader
            assert reader.watch(time.monotonic() + later) is None and reader.fault
        assert camera.connections == 2 and not reader.connected.is_set()
        camera.release(0)  # the first hung read returns (its connection closed): that reader exits
        assert wait_until(lambda: reader.hung_readers() == 1, 30)
        assert wait_until(lambda: (watched(), camera.connections == 3)[1], 30)
        assert reader.fault is None  # a reader is open again
        assert wait_until(lambda: reader.connected.is_set(), 30)  # frames again from the new reader
        assert len(said) == 1 and reader.stalls == 2
    finally:
        reader.stop()
        camera.close()


def test_a_reader_opened_again_whose_open_hangs_is_stalled_too(faces_dir, mjpeg_camera):
    """Found in review: the reader opened again after a stall was watched only once it had
    delivered a frame. Its open (or first read) hanging the same way — here the camera's next
    connection is accepted and answered with nothing — left the watch silent for good: no stall,
    no ERROR, not a hung reader, and (a source whose read never gives up: GStreamer, picamera2)
    the camera never opened again. An attempt without a frame for ``open_s`` is a stall too."""

    from facelink.device.camera import CameraReader
    from tests.waiting import wait_until

    reader = CameraReader(mjpeg_camera.url, stall_s=1.0, open_s=2.0).start()
    said, watched = watching(reader)

    try:
        assert wait_until(lambda: reader.connected.is_set(), 30)
        mjpeg_camera.stall.set()  # the first connection stops sending; later ones answer nothing
        assert wait_until(lambda: (watched(), reader.stalls == 1)[1], 15)
        assert wait_until(lambda: mjpeg_camera.connections == 2, 15)
        # the second reader hangs in its open: within open_s it is stalled too (an ERROR to say, a
        # hung reader on health) and a third is started, well before OpenCV's own 30 s open timeout
        assert wait_until(lambda: (watched(), reader.stalls == 2)[1], 15), (said, reader.last_error)
        assert reader.hung_readers() == 2 and reader.reopens >= 2 and not reader.connected.is_set()
        assert "delivered no frame in 2 s" in said[1] and said[1].endswith("opened again on a new reader")
        assert "127.0.0.1" not in "".join(said)
        mjpeg_camera.resume.set()  # the camera answers again: the newest reader delivers frames
        assert wait_until(lambda: (watched(), reader.connected.is_set())[1], 30)
        assert mjpeg_camera.connections >= 3 and reader.stalls == 2
        assert wait_until(lambda: reader.hung_readers() == 1, 30)  # the one that hung in its open exited
    finally:
        reader.stop()


def test_a_reader_thread_that_cannot_start_is_an_error_and_tried_again(tmp_path, broker, make_settings,
                                                                        engine, mjpeg_camera, reader_threads):
    """Found in review: a camera reader thread that could not start (the process out of threads or
    memory: ``RuntimeError: can't start new thread``) raised out of the door's start, or out of the
    stall watch once, and then left the camera unwatched: no reader, no stall, no further ERROR,
    never opened again. Now it is a camera fault, published as ERROR every ERROR_REPEAT_S while it
    lasts, and each housekeeping tries again: once a thread starts, frames flow again."""
    import time

    from facelink.device.daemon import ERROR_REPEAT_S
    from tests.waiting import wait_until

    from .conftest import door_daemon

    threads_left = reader_threads  # set: reader threads can start again
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": mjpeg_camera.url})
    daemon = door_daemon(settings, engine)
    watcher = Watcher(broker.port, ["facelink/+/decision"], client_id="camera-thread-watcher")

    def errors() -> list[dict]:
        return [d for d in watcher.payloads("door-1/decision") if d["decision"] == "ERROR"]

    try:
        assert watcher.barrier()
        daemon.pump.start()
        daemon.camera.start()  # raises nothing: the door runs, locked, and says why
        now = time.monotonic()
        for _ in range(20):  # every loop turn tries again; the fault is said once per ERROR_REPEAT_S
            daemon._housekeeping(now)
        assert watcher.wait_for(lambda: errors(), 30)
        (error,) = errors()
        assert error["reason"].startswith("CameraError:") and "can't start new thread" in error["reason"]
        assert mjpeg_camera.url not in error["reason"]
        assert daemon.health()["camera_connected"] is False and mjpeg_camera.connections == 0
        daemon._housekeeping(now + ERROR_REPEAT_S)  # still failing 30 s later: said again
        assert watcher.wait_for(lambda: len(errors()) == 2, 30)
        threads_left.set()
        daemon._housekeeping(now + ERROR_REPEAT_S + 1)  # tried again: a reader starts
        assert daemon.camera.fault is None
        assert wait_until(lambda: daemon.camera.connected.is_set(), 30)
        assert daemon.camera.get(timeout=10) is not None  # frames from the camera again
        daemon._faults(now + 3 * ERROR_REPEAT_S)  # the fault is over: nothing more said
        assert watcher.barrier() and len(errors()) == 2 and daemon.stats.errors == 2
    finally:
        watcher.close()
        daemon.shutdown(flush_timeout_s=5)


def test_a_reader_thread_tried_again_is_not_a_reopen_each_time(mjpeg_camera, reader_threads):
    """Found in review: while no reader thread could start, every loop turn's watch (about five a
    second with no frames) counted a reopen: health ``camera_reopens`` grew by thousands an hour
    for a camera that was never opened. The retries are not reopens; the camera opens once a
    thread starts."""
    from facelink.device.camera import CameraReader
    from tests.waiting import wait_until

    threads_left = reader_threads  # set: reader threads can start again
    reader = CameraReader(mjpeg_camera.url, stall_s=1.0).start()
    try:
        for turn in range(100):
            reader.watch(float(turn))
        assert reader.fault is not None and reader.reopens == 0
        threads_left.set()
        reader.watch(100.0)
        assert reader.fault is None and reader.reopens == 0
        assert wait_until(lambda: reader.connected.is_set(), 30)
    finally:
        reader.stop()


def test_a_stall_whose_new_reader_cannot_start_says_so(faces_dir, mjpeg_camera, reader_threads):
    """Found in review: after a stall, a new reader whose thread could not start was still said
    "opened again on a new reader". It says no reader could start; the fault stands until one
    does."""

    from facelink.device import camera as camera_mod
    from tests.waiting import wait_until

    reader_threads.set()
    reader = camera_mod.CameraReader(mjpeg_camera.url, stall_s=1.0).start()
    said, watched = watching(reader)

    try:
        assert wait_until(lambda: reader.connected.is_set(), 30)
        reader_threads.clear()
        mjpeg_camera.stall.set()
        assert wait_until(lambda: (watched(), reader.stalls == 1)[1], 15)
        assert len(said) == 1 and "no new reader could start" in said[0] and "opened again" not in said[0]
        assert "can't start new thread" in reader.fault
        reader_threads.set()
        mjpeg_camera.resume.set()
        watched()  # tried again: a reader starts
        assert reader.fault is None
        assert wait_until(lambda: reader.connected.is_set(), 30)
    finally:
        reader.stop()
