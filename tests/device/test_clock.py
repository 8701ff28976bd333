"""The clock the door decides on (device/clock.py) and the scene time a replayed source carries
(device/camera.py). The daemon end to end: tests/device/test_replay_clock.py."""

from __future__ import annotations

import time

import numpy as np
import pytest

from facelink.device.camera import CameraReader, Frame
from facelink.device.clock import DecisionClock


def _frames(reader: CameraReader, n: int) -> list[Frame]:
    got, deadline = [], time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        if (frame := reader.get(timeout=0.2)) is not None:
            got.append(frame)
    reader.stop()
    return got


def test_a_video_carries_its_own_frame_times(faces_dir):
    frames = _frames(CameraReader(str(faces_dir / "video/feat_man.mp4")).start(), 10)
    assert [f.index for f in frames] == list(range(10))
    steps = np.diff([f.scene_at for f in frames])
    assert steps == pytest.approx([1 / 30] * 9)  # the clip is 30 frames a second
    assert frames[0].scene_at == frames[0].captured_at


def test_a_folder_steps_each_video_at_its_own_rate_and_each_image_at_max_fps(tmp_path, faces_dir):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("0.jpg", "2.jpg"):
        (folder / name).write_bytes((faces_dir / "people/obama/1.jpg").read_bytes())
    (folder / "1-clip.mp4").write_bytes((faces_dir / "video/feat_man.mp4").read_bytes())  # 72 frames, 30 fps
    frames = _frames(CameraReader(str(folder), max_fps=5).start(), 74)
    assert np.diff([f.scene_at for f in frames]) == pytest.approx([1 / 30] * 72 + [0.2])


def test_a_looped_video_runs_on_without_a_jump(faces_dir):
    frames = _frames(CameraReader(str(faces_dir / "video/feat_man.mp4"), loop=True).start(), 150)
    assert [f.index for f in frames] == list(range(150))  # twice round the 72-frame clip and on
    assert np.diff([f.scene_at for f in frames]) == pytest.approx([1 / 30] * 149)


def test_cameras_and_live_replays_run_on_real_time(faces_dir):
    live = CameraReader(str(faces_dir / "video/feat_man.mp4"), live=True)  # how bench_device plays a file
    assert not live.replays and not CameraReader("0").replays and not CameraReader("0", live=False).replays
    assert all(f.scene_at is None for f in _frames(live.start(), 3))


def _frame(index: int, scene_at: float | None) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), time.monotonic(), index, scene_at)


def test_a_replay_is_decided_on_scene_time_and_the_clock_never_goes_back():
    clock = DecisionClock(replay=True)
    start = clock.now()  # a badge before the first frame: real time, not kept
    assert clock.frame(_frame(0, start - 0.5)) == start - 0.5  # captured a moment before it
    assert clock.frame(_frame(0, start + 1.0)) == start + 1.0
    assert clock.frame(_frame(1, start + 1.5)) == start + 1.5
    assert clock.now() == start + 1.5  # a badge between frames: presented at the newest frame
    assert clock.frame(_frame(2, start + 1.2)) == start + 1.5  # never backwards
    live = DecisionClock(replay=False)
    before = time.monotonic()
    assert live.frame(_frame(0, 0.0)) >= before and live.now() >= before


@pytest.mark.parametrize("fps", [0.5, 1000.0])
def test_a_video_stating_an_implausible_rate_is_timed_like_an_image(tmp_path, faces_dir, fps):
    """A file is untrusted input: a container claiming 0.5 or 1000 frames a second would stretch
    or squeeze every window of the replay; it is logged and timed at camera.max_fps instead."""
    import cv2

    path = tmp_path / "odd.avi"
    face = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (face.shape[1], face.shape[0]))
    for _ in range(3):
        writer.write(face)
    writer.release()
    frames = _frames(CameraReader(str(path), max_fps=5).start(), 3)
    assert cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) == pytest.approx(fps)  # it does say so
    assert np.diff([f.scene_at for f in frames]) == pytest.approx([0.2, 0.2])
