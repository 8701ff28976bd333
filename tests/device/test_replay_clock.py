"""A replayed file is decided on its own clock (device/clock.py): the same decisions on a fast
machine and on a stalled one. On the processing clock, a stall longer than track_max_age_s split
the one person in the clip into several tracks, each GRANTED again."""

from __future__ import annotations

import time

from facelink.device.daemon import Daemon

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


def _replay(make_settings, broker, faces_dir, engine) -> list[tuple]:
    settings = make_settings(mqtt={"port": broker.port},
                             camera={"source": str(faces_dir / "video/feat_man.mp4")},
                             matching={"frames_required": 1, "frames_window": 1, "cooldown_s": 0,
                                       "track_max_age_s": TRACK_MAX_AGE_S, "collection_id": "door"},
                             liveness={"enabled": False})
    daemon = Daemon(settings, engine=engine)
    decided: list[tuple] = []
    emit = daemon.emit

    def record(decision) -> None:
        decided.append((decision.decision, decision.user_id, decision.track_id))
        emit(decision)

    daemon.emit = record
    assert daemon.run() == 0  # the clip ends: the daemon stops by itself
    return decided


def test_a_replay_decides_the_same_on_a_stalled_machine(broker, make_settings, faces_dir, enroll, engine):
    enroll(faces_dir, "feat_man", "photo.jpg")
    steady = _replay(make_settings, broker, faces_dir, engine)
    assert [(d, u) for d, u, _ in steady] == [("GRANTED", "feat_man")]
    stalling = StallingEngine(engine, stall_on={10, 25, 40})
    assert _replay(make_settings, broker, faces_dir, stalling) == steady
    assert stalling.frames == 72  # every frame of the clip was decided, stalls included
