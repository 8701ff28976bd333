"""A replayed file is decided on its own clock (device/clock.py): the same decisions on a fast
machine and on a stalled one. On the processing clock, a stall longer than track_max_age_s split
the one person in the clip into several tracks, each GRANTED again."""

from __future__ import annotations

import time

import cv2
import numpy as np

from facelink.access.badges import BadgeRead
from facelink.device.camera import CameraReader, Frame
from facelink.device.daemon import Daemon
from facelink.enroll import credentials
from facelink.enroll.context import Context
from facelink.enroll.store import Store

TRACK_MAX_AGE_S = 0.3  # ~9 frames of the 30 fps clip
STALL_S = 0.6  # > TRACK_MAX_AGE_S: on the processing clock, each stall ends the track


class StallingEngine:
    """The real engine on a machine that stalls now and then (another job, swap, a slow SD card)."""

    def __init__(self, engine, stall_on: set[int]) -> None:
        self._engine, self._stall_on, self.frames = engine, stall_on, 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def detect(self, bgr):
        self.frames += 1
        if self.frames in self._stall_on:
            time.sleep(STALL_S)  # the stall itself, not a wait for something to happen
        return self._engine.detect(bgr)


def _replay(make_settings, broker, faces_dir, engine, source: str | None = None, badge: str | None = None,
            **matching) -> list[tuple]:
    """The replay's decisions as (decision, user_id, track_id, reason)."""
    settings = make_settings(mqtt={"port": broker.port},
                             camera={"source": source or str(faces_dir / "video/feat_man.mp4")},
                             matching={"frames_required": 1, "frames_window": 1, "cooldown_s": 0,
                                       "track_max_age_s": TRACK_MAX_AGE_S, "collection_id": "door",
                                       **matching},
                             liveness={"enabled": False})
    daemon = Daemon(settings, engine=engine)
    if badge is not None:  # presented before the replay's first frame
        assert daemon.pipeline.badge(BadgeRead(badge, "mqtt"), daemon.clock.now()) == []
    return _run_recorded(daemon)


def _run_recorded(daemon: Daemon) -> list[tuple]:
    """Run ``daemon`` until its replay ends; what it decided, as (decision, user_id, track_id,
    reason), in order."""
    decided: list[tuple] = []
    emit = daemon.emit

    def record(decision, now=None, made_on=None) -> None:
        decided.append((decision.decision, decision.user_id, decision.track_id, decision.reason))
        emit(decision, now, made_on)

    daemon.emit = record
    assert daemon.run() == 0  # the replay ends: the daemon stops by itself
    return decided


def test_a_replay_decides_the_same_on_a_stalled_machine(broker, make_settings, faces_dir, enroll, engine):
    enroll(faces_dir, "feat_man", "photo.jpg")
    steady = _replay(make_settings, broker, faces_dir, engine)
    assert [(d, u) for d, u, _, _ in steady] == [("GRANTED", "feat_man")]
    stalling = StallingEngine(engine, stall_on={10, 25, 40})
    assert _replay(make_settings, broker, faces_dir, stalling) == steady
    assert stalling.frames == 72  # every frame of the clip was decided, stalls included


def test_a_card_window_still_open_when_the_replay_ends_is_denied(tmp_path, broker, make_settings, faces_dir,
                                                                   enroll, engine):
    """card_and_face: a badge, then a replay with nobody in it that ends inside the window: the
    verification closes DENIED_NO_FACE (no more frames can bring the face), it is not left unsaid."""
    enroll(faces_dir, "feat_man", "photo.jpg")
    with Store(tmp_path / "facelink.db") as store:
        credentials.put_user_credential(Context(store, lambda: engine), "door", "feat_man", "H10301:7:700")
    empty = tmp_path / "empty-doorway"
    empty.mkdir()
    for i in range(3):
        cv2.imwrite(str(empty / f"{i}.png"), np.full((480, 640, 3), 90, np.uint8))
    decided = _replay(make_settings, broker, faces_dir, engine, source=str(empty), badge="H10301:7:700",
                      mode="card_and_face", card_window_s=600)
    assert [(d, u, why) for d, u, _, why in decided] == [("DENIED_NO_FACE", "feat_man", "the replay ended")]


class LastFrameRacesTheEnd(CameraReader):
    """A replay whose reader hands over its last frame and raises end_of_stream while the door's
    get() is just timing out (the race on a loaded machine); no reader thread."""

    def __init__(self, source: str, pixels) -> None:
        super().__init__(source)
        self._pixels, self._raced = pixels, False

    def start(self) -> LastFrameRacesTheEnd:
        return self

    def get(self, timeout: float = 0.5) -> Frame | None:
        if not self._raced:
            self._raced = True
            now = time.monotonic()
            self._queue.put(Frame(self._pixels, now, 0, now))
            self.end_of_stream.set()
            return None
        return super().get(timeout)


def test_the_last_frame_before_the_end_of_a_replay_is_still_decided(broker, make_settings, faces_dir,
                                                                     enroll, engine):
    enroll(faces_dir, "obama", "1.jpg")
    photo = faces_dir / "people/obama/2.jpg"
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(photo)},
                             matching={"frames_required": 1, "frames_window": 1, "collection_id": "door"},
                             liveness={"enabled": False})
    daemon = Daemon(settings, engine=engine)
    daemon.camera = LastFrameRacesTheEnd(str(photo), cv2.imread(str(photo)))
    assert [(d, u) for d, u, _, _ in _run_recorded(daemon)] == [("GRANTED", "obama")]
