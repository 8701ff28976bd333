"""Hardware-only parts are optional imports that fail with a message saying what to install."""

from __future__ import annotations

import importlib.util

import pytest

from facelink.device.camera import CameraError, is_finite_source, open_frames
from facelink.device.door import CommandRelay, GpioRelay, NoRelay


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_picamera2_missing_says_what_to_install():
    with pytest.raises(CameraError, match="python3-picamera2"):
        next(open_frames("picamera2"))


def test_gpio_outputs_without_gpiozero_say_what_to_install(monkeypatch):
    """As on a machine without gpiozero (tests install it: its mock pins drive the GPIO tests)."""
    import sys

    from facelink.access.wiegand_gpio import WiegandGpioOutput
    from facelink.errors import ConfigError

    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import gpiozero raises ImportError
    with pytest.raises(ConfigError, match=r"door\.relay.*facelink\[pi\]"):
        GpioRelay(17, 1.0)
    with pytest.raises(ConfigError, match=r"door\.output=wiegand.*facelink\[pi\]"):
        WiegandGpioOutput(23, 24, 50, 2000)


def test_command_relay_runs_with_the_user(tmp_path):
    out = tmp_path / "opened"
    CommandRelay(f'echo "$FACELINK_USER_ID" > {out}', 1.0).pulse("emp-7")
    import time

    deadline = time.monotonic() + 30
    while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text().strip() == "emp-7"
    assert NoRelay().pulse("x") is None


def test_source_kinds(tmp_path):
    assert not is_finite_source("0") and not is_finite_source("rtsp://10.0.0.5/stream")
    assert not is_finite_source("picamera2") and not is_finite_source("v4l2src ! videoconvert ! appsink")
    assert is_finite_source(str(tmp_path)) and is_finite_source("door.mp4")
    with pytest.raises(CameraError, match="missing"):
        open_frames(str(tmp_path / "gone.mp4"))


def test_live_source_keeps_only_the_newest_frame(faces_dir):
    """A slow consumer never builds a queue: old frames are dropped, latency stays low."""
    import time

    from facelink.device.camera import CameraReader

    reader = CameraReader(str(faces_dir / "video/feat_man.mp4"), loop=True, max_fps=100, live=True).start()
    try:
        assert reader.connected.wait(30)
        deadline = time.monotonic() + 60
        while reader.dropped <= 10 and time.monotonic() < deadline:  # nobody consumes meanwhile
            time.sleep(0.05)
        assert reader.dropped > 10 and reader._queue.qsize() <= 1  # old frames dropped, no queue
        first = reader.get(timeout=5)
        assert first is not None and first.index >= 10  # the newest frame, not the first ones
    finally:
        reader.stop()
