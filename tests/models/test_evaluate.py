"""`facelink evaluate` and `facelink calibrate` on real labelled faces."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from facelink.models import evaluate as ev
from facelink.models.manifest import calibration_for
from facelink.models.similarity import cosine_to_similarity, similarity_to_cosine


def _facelink(models_dir, *args):
    env = {**os.environ, "FACELINK_MODELS__MODELS_DIR": str(models_dir)}
    proc = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_evaluate_json_and_plot(models_dir, faces_dir, tmp_path):
    out = _facelink(models_dir, "evaluate", str(faces_dir / "people"), "--json", "--configs",
                    "onnxruntime fp32,OpenCV reference", "--plot", str(tmp_path / "roc.png"))
    report = json.loads(out)
    assert {"eer", "tar_at_far", "far_frr_at_threshold"} <= set(report)
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    fp32 = report["configs"]["onnxruntime fp32"]
    assert fp32["impostor_pairs"] > 200 and fp32["genuine_pairs"] > 20
    assert fp32["tar_at_far"]["0.0001"] is None  # not measurable on this little data: said, not guessed
    assert report["far_frr_at_threshold"]["far"] == 0.0  # no stranger at Similarity 99
    assert fp32["no_face_fraction"] == 0.0
    assert fp32["multi_frame"]["sequence_far"] == 0.0
    assert set(fp32["user_level"]) >= {"best_of", "mean"}
    ref = report["configs"]["OpenCV reference"]
    assert abs(ref["eer"] - fp32["eer"]) < 0.05


def test_pairs_csv(models_dir, faces_dir, tmp_path, engine):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("file_x,file_y,Decision\nobama/1.jpg,obama/2.jpg,Yes\nobama/1.jpg,biden/1.jpg,No\n"
                     "biden/1.jpg,biden/2.jpg,Yes\nkit_harington/1.jpg,rose_leslie/1.jpg,No\n")
    data = ev.load_dataset(faces_dir / "people", pairs)
    genuine, impostor = ev.pair_scores(ev.embed_images(engine, data.images), data.pairs)
    assert genuine.size == 2 and impostor.size == 2
    assert genuine.min() > impostor.max()


def test_calibration_fit_and_floor(engine, faces_dir):
    data = ev.load_dataset(faces_dir / "people")
    genuine, impostor = ev.pair_scores(ev.embed_images(engine, data.images), data.pairs)
    free = ev.fit_calibration(genuine, impostor, 1e-4)
    cal = type(engine.calibration)(free["a"], free["b"], "")
    assert cosine_to_similarity(free["cosine_at_99"], cal) == pytest.approx(99, abs=0.01)
    assert free["cosine_at_99"] > np.quantile(impostor, 0.99)
    floored = ev.fit_calibration(genuine, impostor, 1e-4, engine.calibration)
    refit = type(engine.calibration)(floored["a"], floored["b"], "")
    # never looser: the cosine the door needed for 99 before still scores no more than 99
    assert cosine_to_similarity(similarity_to_cosine(99, engine.calibration), refit) <= 99.0 + 1e-3


def test_calibrate_write_is_used(models_dir, faces_dir, tmp_path):
    import shutil

    local = tmp_path / "models"
    shutil.copytree(models_dir, local)
    out = json.loads(_facelink(local, "calibrate", str(faces_dir / "people"), "--write"))
    assert (local / "calibration.toml").is_file()
    cal = calibration_for(out["face_model_version"], local)
    assert (cal.a, cal.b) == (out["a"], out["b"]) and "impostor pairs" in cal.fitted_on


def test_unusable_datasets_are_clear_errors(tmp_path, faces_dir):
    from facelink.errors import InvalidParameterException

    with pytest.raises(InvalidParameterException, match="not found"):
        ev.load_dataset(tmp_path / "nope")
    (tmp_path / "one" / "only_person").mkdir(parents=True)
    with pytest.raises(InvalidParameterException, match="two people"):
        ev.load_dataset(tmp_path / "one")
    with pytest.raises(InvalidParameterException, match="impostor"):
        ev.fit_calibration(np.array([0.8]), np.array([0.1, 0.2]))
