"""The default CPU embedder (onnxruntime, SFace's PRelus as depthwise convs) gives the OpenCV
reference's embeddings on real faces, one at a time and batched, under the same FaceModelVersion."""

from __future__ import annotations

import cv2
import numpy as np

from facelink.models.aligner import align_face
from facelink.models.engine import FaceEngine, choose


def test_default_choice_is_the_depthwise_model_same_version():
    default = choose("onnxruntime", "auto", "fp32", ["CPUExecutionProvider"])
    reference = choose("onnxruntime", "opencv", "fp32", ["CPUExecutionProvider"])
    assert (default.embedder_backend, default.embedder_file) == ("onnxruntime", "sface_fp32_dw.onnx")
    assert default.model_version == reference.model_version  # no re-index: same embeddings


def test_default_engine_embeds_every_face_as_the_reference(model_settings, faces_dir):
    engine = FaceEngine.from_settings(model_settings)
    ref = cv2.FaceRecognizerSF.create(str(model_settings.models_dir / "sface_int8bq_pruned.onnx"), "")
    crops = []
    for path in sorted((faces_dir / "people").rglob("*.jpg")):
        img = cv2.imread(str(path))
        faces = engine.analyze(img, max_faces=1)
        assert faces, path
        crop = align_face(img, faces[0].detection.landmarks)
        r = ref.feature(crop).ravel()
        assert float(faces[0].embedding @ (r / np.linalg.norm(r))) >= 0.999, path
        crops.append(crop)
    # a batch (several faces in one frame) gives each face's own embedding
    batched = engine.embedder.embed(crops[:5])
    single = np.stack([engine.embedder.embed([c])[0] for c in crops[:5]])
    assert np.min(np.sum(batched * single, axis=1)) >= 0.9999
