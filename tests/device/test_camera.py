"""picamera2's pixel formats, as the Picamera2 manual describes their memory order (libcamera
names formats by word order): RGB888 is [B, G, R], BGR888 is [R, G, B], XRGB8888 is
[B, G, R, 255], XBGR8888 is [R, G, B, 255]. The door works in OpenCV's B, G, R."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facelink.device.camera import PICAMERA_FORMAT, CameraError, picamera_to_bgr


def test_a_red_pixel_stays_red():
    red_in_bgr888 = np.array([[[255, 0, 0]]], np.uint8)  # BGR888's memory order is R, G, B
    assert picamera_to_bgr(red_in_bgr888, "BGR888").tolist() == [[[0, 0, 255]]]  # B, G, R
    red_in_rgb888 = np.array([[[0, 0, 255]]], np.uint8)  # RGB888's memory order is B, G, R
    assert picamera_to_bgr(red_in_rgb888, "RGB888").tolist() == [[[0, 0, 255]]]


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XRGB8888", "XBGR8888"])
def test_every_format_gives_back_the_photo(fmt, faces_dir):
    bgr = cv2.imread(str(faces_dir / "people/obama/1.jpg"))
    rgb = bgr[:, :, ::-1]
    alpha = np.full(bgr.shape[:2] + (1,), 255, np.uint8)
    memory = {"RGB888": bgr, "BGR888": rgb, "XRGB8888": np.concatenate([bgr, alpha], axis=2),
              "XBGR8888": np.concatenate([rgb, alpha], axis=2)}[fmt]
    out = picamera_to_bgr(np.ascontiguousarray(memory), fmt)
    assert out.shape == bgr.shape and np.array_equal(out, bgr) and out.flags.c_contiguous


def test_the_door_asks_for_opencvs_order_and_refuses_unknown_formats():
    assert PICAMERA_FORMAT == "RGB888"  # B, G, R in memory: no conversion cost
    with pytest.raises(CameraError, match="YUV420"):
        picamera_to_bgr(np.zeros((4, 4, 3), np.uint8), "YUV420")
    with pytest.raises(CameraError, match="shape"):
        picamera_to_bgr(np.zeros((4, 4), np.uint8), "RGB888")
