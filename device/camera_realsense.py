"""Intel RealSense source (camera.source = "realsense" or "realsense-ir"), behind the camera
interface: it yields BGR frames like every other source.

  realsense     colour frames; each carries the depth frame aligned to it (``.depth``, mm), which
                the FLAT_FACE check (liveness_depth.py) measures.
  realsense-ir  the left infrared camera as grey frames (made 3-channel for the same engine);
                a phone or monitor held up shows no face under IR, and the depth frame (aligned
                to the IR image, same sensor) is attached too.

``pyrealsense2`` is optional (PyPI wheels for x86-64 and, for Python 3.10, aarch64 i.e. Jetson);
without it the source fails with a clear message and the camera reader keeps retrying.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from facelink.errors import CameraError


class RGBDPixels(np.ndarray):
    """A BGR frame that carries its aligned depth map in millimetres (``depth``, float32)."""

    depth: np.ndarray | None

    def __new__(cls, bgr: np.ndarray, depth_mm: np.ndarray | None) -> RGBDPixels:
        obj = np.asarray(bgr).view(cls)
        obj.depth = depth_mm
        return obj

    def __array_finalize__(self, obj) -> None:
        self.depth = getattr(obj, "depth", None)


def depth_of(pixels: np.ndarray) -> np.ndarray | None:
    return getattr(pixels, "depth", None)


def realsense_frames(source: str, width: int = 640, height: int = 480, fps: int = 30) -> Iterator[np.ndarray]:
    try:
        import pyrealsense2 as rs  # type: ignore
    except ImportError as exc:
        raise CameraError("camera.source=realsense needs pyrealsense2 (pip install pyrealsense2; "
                          "aarch64 wheels exist for Python 3.10, e.g. on a Jetson)") from exc
    infrared = source == "realsense-ir"
    pipe, cfg = rs.pipeline(), rs.config()
    cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
    if infrared:
        cfg.enable_stream(rs.stream.infrared, 1, width, height, rs.format.y8, fps)
    else:
        cfg.enable_stream(rs.stream.color, width, height, rs.format.bgr8, fps)
    profile = pipe.start(cfg)
    scale_mm = profile.get_device().first_depth_sensor().get_depth_scale() * 1000.0
    align = None if infrared else rs.align(rs.stream.color)  # IR 1 and depth share the left imager
    try:
        while True:
            frames = pipe.wait_for_frames()
            if align is not None:
                frames = align.process(frames)
            depth = np.asanyarray(frames.get_depth_frame().get_data()).astype(np.float32) * scale_mm
            if infrared:
                grey = np.asanyarray(frames.get_infrared_frame(1).get_data())
                image = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                image = np.asanyarray(frames.get_color_frame().get_data()).copy()
            yield RGBDPixels(image, depth)
    finally:
        pipe.stop()
