"""The TFLite backend (ai-edge-litert) running BlazeFace on real faces, and the door's presence gate."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facelink.device.tracker import iou
from facelink.models.blazeface import BlazeFaceDetector
from facelink.models.provision import provision
from facelink.models.runtime import TFLiteBackend


@pytest.fixture(scope="module")
def blazeface(models_dir):
    pytest.importorskip("ai_edge_litert", reason="TFLite runtime not installed (pip install 'facelink[tflite]')")
    provision(models_dir, tflite=True)
    return BlazeFaceDetector(TFLiteBackend(models_dir / "blazeface_short_range.tflite", threads=2))


def test_blazeface_finds_the_faces_yunet_finds(blazeface, engine, faces_dir):
    for path in sorted((faces_dir / "people").rglob("*.jpg"))[:12]:
        img = cv2.imread(str(path))
        found = blazeface.detect(img)
        assert found, path
        assert iou(found[0].box, engine.detect(img)[0].detection.box) > 0.5, path
        eyes = found[0].keypoints[:2]
        assert found[0].box[0] < eyes[:, 0].min() and eyes[:, 0].max() < found[0].box[0] + found[0].box[2]


def test_blazeface_sees_nothing_in_an_empty_scene(blazeface):
    assert blazeface.detect(np.full((480, 640, 3), 120, np.uint8)) == []
