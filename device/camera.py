"""Frame sources: picamera2, any OpenCV source (V4L2 index, RTSP/HTTP, GStreamer, video file),
and a folder of images/videos. ``CameraReader`` runs one in a thread, reopens a lost camera with
back-off and never queues frames without bound."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelink.errors import CameraError, FaceLinkError
from facelink.models.image import decode_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm"}
REALSENSE_SOURCES = ("realsense", "realsense-ir")  # Intel RealSense colour+depth / IR+depth
MAX_HUNG_READERS = 4  # abandoned camera readers whose read still hangs: past this none is opened
OPEN_S = 60.0  # an attempt (open and first frame) without a frame this long hangs (OpenCV's FFmpeg gives up at 30 s)


PICAMERA_FORMAT = "RGB888"  # libcamera names formats by word order: RGB888 is B,G,R bytes (OpenCV's)

# picamera2 format -> what to do with capture_array()'s last axis to get OpenCV's B,G,R bytes.
# From the Picamera2 manual ("Image formats"): XBGR8888 pixels look like [R, G, B, 255],
# XRGB8888 like [B, G, R, 255], RGB888 is ordered [B, G, R] and BGR888 [R, G, B].
_TO_BGR = {"RGB888": (0, 1, 2), "BGR888": (2, 1, 0), "XRGB8888": (0, 1, 2), "XBGR8888": (2, 1, 0)}


def picamera_to_bgr(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """A picamera2 ``capture_array`` in format ``fmt`` as OpenCV's B,G,R bytes."""
    try:
        order = _TO_BGR[fmt]
    except KeyError as exc:
        raise CameraError(f"picamera2 format {fmt!r} is not supported ({', '.join(_TO_BGR)})") from exc
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        raise CameraError(f"picamera2 {fmt} frame has shape {pixels.shape}, expected H x W x 3 or 4")
    if order == (0, 1, 2) and pixels.shape[2] == 3:
        return pixels
    return np.ascontiguousarray(pixels[:, :, list(order)])


@dataclass(frozen=True)
class Frame:
    pixels: np.ndarray
    captured_at: float  # time.monotonic()
    index: int
    scene_at: float | None = None  # a replayed file or folder: where this frame is on its own clock


# A replayed file's frames come with the time since the previous frame of the scene: a video's
# frame period as its container states it; None (an image, an unknown or implausible rate): the
# reader's own, 1 / camera.max_fps.
Timed = tuple[np.ndarray, float | None]


def _video_frames(path: str) -> Iterator[Timed]:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise CameraError(f"cannot open {path}")
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        period = 1.0 / fps if 1.0 <= fps <= 240.0 else None
        if period is None:
            log.warning("camera: %s states %g frames a second: replayed at camera.max_fps", path, fps)
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame, period
    finally:
        cap.release()


def _image_frames(path: Path) -> Iterator[Timed]:
    """One image file as a frame, decoded like every other image (models.image: header checked
    before decoding); a file that can't be used is skipped with a log line."""
    try:
        yield decode_image(path).pixels, None
    except FaceLinkError as exc:
        log.warning("camera: skipping %s: %s: %s", path, exc.code, exc.message)


def _folder_frames(folder: Path) -> Iterator[Timed]:
    """Every image and video of a folder in name order. A bad file is skipped with a log line;
    it must not end the folder (the reader would start it again from the first file)."""
    if not folder.is_dir():
        raise CameraError(f"folder {folder} is missing")
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            yield from _image_frames(p)
        elif p.suffix.lower() in VIDEO_SUFFIXES:
            try:
                yield from _video_frames(str(p))
            except CameraError as exc:
                log.warning("camera: skipping %s: %s", p, exc)


def _picamera_frames() -> Iterator[np.ndarray]:
    try:
        from picamera2 import Picamera2  # type: ignore
    except ImportError as exc:
        raise CameraError("camera.source=picamera2 needs Raspberry Pi OS's python3-picamera2 "
                          "(apt install python3-picamera2; venv with --system-site-packages)") from exc
    cam = Picamera2()
    cam.configure(cam.create_video_configuration(main={"format": PICAMERA_FORMAT, "size": (1280, 720)}))
    cam.start()
    try:
        while True:
            yield picamera_to_bgr(cam.capture_array("main"), PICAMERA_FORMAT)
    finally:
        cam.stop()
        cam.close()


def _live_frames(source: str) -> Iterator[np.ndarray]:
    target: int | str = int(source) if source.isdigit() else source
    api = cv2.CAP_GSTREAMER if "!" in source else cv2.CAP_ANY
    cap = cv2.VideoCapture(target, api)
    if not cap.isOpened():
        raise CameraError(f"cannot open camera {source!r}")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                raise CameraError(f"camera {source!r} stopped delivering frames")
            yield frame
    finally:
        cap.release()


def is_finite_source(source: str) -> bool:
    """Files and folders end; cameras and streams don't (and must drop old frames)."""
    p = Path(source)
    if source in ("picamera2", *REALSENSE_SOURCES) or source.isdigit() or "://" in source or "!" in source:
        return False
    return p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES or p.is_dir()


def open_frames(source: str) -> Iterator[np.ndarray]:
    """The source's frames (BGR); a file or folder ends, a camera does not."""
    if is_finite_source(source):
        return (pixels for pixels, _ in _replay_frames(source))
    return _live_frames_of(source)


def _replay_frames(source: str) -> Iterator[Timed]:
    p = Path(source)
    if p.is_dir():
        return _folder_frames(p)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return _image_frames(p)
    if not p.is_file():
        raise CameraError(f"video file {source} is missing")
    return _video_frames(source)


def _live_frames_of(source: str) -> Iterator[np.ndarray]:
    if source == "picamera2":
        return _picamera_frames()
    if source in REALSENSE_SOURCES:  # depth / IR camera: camera_realsense.py
        from .camera_realsense import realsense_frames

        return realsense_frames(source)
    return _live_frames(source)


class CameraReader:
    """Reads frames in a thread. Live sources keep only the newest frame (low latency);
    finite sources (files, folders) hand over every frame in order. A source that fails is
    reopened with exponential back-off; ``end_of_stream`` is set when a finite source ends.

    A file or folder (unless replayed ``live``) is handed over as fast as the door can take it,
    so its frames also carry the scene's own time (``Frame.scene_at``: the first frame's capture
    time, then each video frame one frame period of its file later, each image 1 / ``max_fps``
    later; on across loops and reopens): the door decides a replay on it, the same way on a
    fast machine and on a stalled one."""

    def __init__(self, source: str, *, loop: bool = False, max_backoff_s: float = 30.0,
                 max_fps: float = 15.0, live: bool | None = None, stall_s: float = 10.0,
                 max_hung: int = MAX_HUNG_READERS, open_s: float = OPEN_S) -> None:
        self.source = source
        self.stall_s = stall_s
        self.open_s = max(open_s, stall_s)
        self.max_hung = max_hung
        self.loop = loop
        self.max_backoff_s = max_backoff_s
        self.min_interval = 1.0 / max_fps
        self.from_file = is_finite_source(source)
        # live: keep only the newest frame. A file is replayed "live" (paced at max_fps) when asked,
        # which is how tools/bench_device.py simulates a camera.
        self.finite = self.from_file if live is None else not live
        self.replays = self.finite and self.from_file  # frames carry scene time (Frame.scene_at)
        self._scene_at: float | None = None
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize=2 if self.finite else 1)
        self._stop = threading.Event()
        self.end_of_stream = threading.Event()
        self.connected = threading.Event()
        self.dropped = 0
        self.reopens = 0
        self.last_error: str | None = None
        self.stalls = 0  # reads abandoned because the source delivered nothing for stall_s
        self._last_frame_at: float | None = None  # the current reader's last frame from the source
        # when the current reader's attempt (its open, then its first read) began; None once it has
        # a frame and while it waits out a back-off (found in review: a reader opened again after a
        # stall whose open hung the same way was never watched: no frame, so never stalled)
        self._opening_since: float | None = None
        self._generation = 0  # the reader thread that owns the source; an abandoned one exits
        self._hung: list[threading.Thread] = []  # abandoned readers (alive while their read hangs)
        self._not_opened = ""  # why no reader is open (fault): max_hung readers hang, or none could start
        self._lock = threading.Lock()
        self._started = False  # start() was called: until then nothing is watched or opened
        self._start_failures = 0  # reader threads that could not start in a row
        self._thread: threading.Thread | None = None  # None: not started, waiting for a hung one to
        #                                             return, or its thread could not start

    def _reader(self) -> threading.Thread:
        return threading.Thread(target=self._run, args=(self._generation,), name="camera", daemon=True)

    def start(self) -> CameraReader:
        """Starts the reader. A thread that cannot start (threads or memory exhausted) raises
        nothing: ``fault`` says so and ``watch`` tries again (found in review: the camera was left
        unwatched, with one ERROR and the door silent after it)."""
        with self._lock:
            self._started = True
            self._launch()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=5)

    def watch(self, now: float) -> str | None:
        """The stall watch, called from the door's loop: a live source that delivered frames and
        then none for ``stall_s`` (its read hangs), or an attempt to open it that has brought no
        frame for ``open_s`` (its open or first read hangs: found in review, a reader opened again
        after a stall and hung so was never watched), is abandoned and opened again on a new reader
        thread (a read cannot be interrupted; the old thread exits, releasing its capture, if its
        read ever returns). An attempt waiting out its back-off is not watched. At most ``max_hung`` hung readers are kept: past that none is opened
        until one of them returns (found in review: a camera that hangs over and over piled up a
        thread and a capture per stall; ``fault`` says so meanwhile). Returns what to say (an ERROR)
        when it opened the camera again after a stall, else None.
        Never for a file or folder (they end; a slow door is not a stall)."""
        with self._lock:
            self._hung = [t for t in self._hung if t.is_alive()]
            if not self._started:
                return None
            if self._thread is None:  # none opened: waiting for a hung reader to return, or its
                if len(self._hung) >= self.max_hung:  # thread could not start
                    return None
                if self._start_failures:  # trying again: counted once, as the attempt that failed was
                    self._launch()  # (found in review: health camera_reopens grew 5 a second meanwhile)
                    return None
                log.warning("camera %s: a hung reader returned: opening the camera again", self.source)
                self._start_reader()
                return None
            if self.finite:
                return None
            last, opening = self._last_frame_at, self._opening_since
            if last is not None and self.connected.is_set() and now - last >= self.stall_s:
                waited = now - last
                said = f"the camera stopped delivering frames (none for camera.stall_s = {self.stall_s:g} s)"
            elif opening is not None and now - opening >= self.open_s:
                waited = now - opening
                said = f"the camera was opened and delivered no frame in {self.open_s:g} s"
            else:
                return None
            self._generation += 1
            self._hung.append(self._thread)
            self._last_frame_at = self._opening_since = None
            self.connected.clear()
            self.stalls += 1
            if len(self._hung) >= self.max_hung:  # said by ``fault``, every ERROR_REPEAT_S while it lasts
                self._thread = None
                self._not_opened = f"{said}: {len(self._hung)} readers hang, not opened again until one returns"
                self.last_error = f"no frame for {waited:.1f} s; {len(self._hung)} readers hung, none opened again"
                log.error("camera %s delivered no frame for %.1f s and %d readers hang: not opened again "
                          "until one returns (restart the door if it does not)", self.source, waited,
                          len(self._hung))
                return None
            self.last_error = f"no frame for {waited:.1f} s: the read hung"
            log.error("camera %s delivered no frame for %.1f s: opening it again on a new reader",
                      self.source, waited)
            self._start_reader()
            if self._thread is None:  # its thread could not start: ``fault`` says so until one does
                return f"{said}: no new reader could start ({self._not_opened})"
            return f"{said}: opened again on a new reader"

    @property
    def fault(self) -> str | None:
        """While no reader is open because ``max_hung`` readers hang: what to say (the door
        publishes it as ERROR every ERROR_REPEAT_S while it lasts, as for a stuck output), else
        None."""
        with self._lock:
            return (self._not_opened or None) if self._thread is None else None

    def hung_readers(self) -> int:
        """Abandoned readers whose read has not returned yet (health)."""
        with self._lock:
            return sum(t.is_alive() for t in self._hung)

    def _start_reader(self) -> None:
        self.reopens += 1
        self._launch()

    def _launch(self) -> None:
        """A new reader thread owns the source; one that cannot start leaves none (``fault``), and
        the next ``watch`` tries again. Called with the lock held."""
        thread = self._reader()
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": the process is out of threads or memory
            self._thread = None
            self._not_opened = f"no camera reader could start ({exc}): tried again every housekeeping"
            self.last_error = f"reader thread not started: {exc}"
            self.connected.clear()
            self._start_failures += 1
            if self._start_failures % 1000 == 1:  # tried every housekeeping: logged now and then
                log.error("camera %s: its reader thread could not start (%s; %d attempts): trying again",
                          self.source, exc, self._start_failures)
            return
        if self._start_failures:
            log.warning("camera %s: a reader thread started after %d failed attempts", self.source,
                        self._start_failures)
            self._start_failures = 0
        self._thread = thread

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def get(self, timeout: float = 0.5) -> Frame | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _offer(self, frame: Frame) -> None:
        if self.finite:
            while not self._stop.is_set():
                try:
                    self._queue.put(frame, timeout=0.2)
                    return
                except queue.Full:
                    continue
            return
        while True:  # the newest frame wins; another reader's put in between (an abandoned one's
            try:  # last frame) is dropped in turn, never raised as a camera problem (found in review)
                self._queue.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self, generation: int) -> None:
        backoff = 0.5
        index = 0
        while True:
            with self._lock:
                if not self._current(generation):
                    return
                self._opening_since = time.monotonic()  # watched from its open on (watch)
            try:
                frames = _replay_frames(self.source) if self.from_file else \
                    ((pixels, None) for pixels in _live_frames_of(self.source))
                last = 0.0
                for pixels, period in frames:
                    with self._lock:
                        if not self._current(generation):
                            return  # stopped, or abandoned after a stall: a newer reader owns the source
                        self._last_frame_at = now = time.monotonic()
                        self._opening_since = None
                        if not self.connected.is_set():
                            log.info("camera %s delivering frames", self.source)
                            self.connected.set()
                            backoff = 0.5
                    if not self.finite and now - last < self.min_interval:
                        if not self.from_file:
                            continue  # a camera: drop the frame, keep its buffer fresh
                        self._stop.wait(self.min_interval - (now - last))
                        now = time.monotonic()
                    last = now
                    if self.replays:
                        self._scene_at = now if self._scene_at is None else \
                            self._scene_at + (period or self.min_interval)
                    self._offer(Frame(pixels, now, index, self._scene_at))
                    index += 1
                if self.loop and self.from_file:
                    continue
                if self.from_file:
                    self.end_of_stream.set()
                    return
                raise CameraError(f"camera {self.source!r} ended")
            except Exception as exc:  # noqa: BLE001 - any camera failure means: reopen later
                with self._lock:
                    if not self._current(generation):
                        return
                    self.connected.clear()
                    self._opening_since = None  # its back-off is no hang
                    self.last_error = str(exc)
                    self.reopens += 1
                log.warning("camera problem (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
