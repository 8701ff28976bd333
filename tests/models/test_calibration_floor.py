"""`facelink calibrate` without --allow-looser never lowers the cosine the door's configured
Similarity threshold stands for, whatever that threshold (not only at the anchors 80 and 99)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from facelink.models import evaluate as ev
from facelink.models.calibration import fit_calibration
from facelink.models.manifest import Calibration, calibration_for
from facelink.models.similarity import similarity_to_cosine


@pytest.fixture(scope="module")
def people_scores(faces_dir, model_settings, tmp_path_factory):
    data = ev.load_dataset(faces_dir / "people")
    return ev.scores_of(data, ev.embed(data, model_settings, cache_dir=tmp_path_factory.mktemp("emb")).vectors)


@pytest.mark.parametrize("fars", [(1e-5, 1e-3), (1e-4, 1e-2), (1e-6, 1e-5)])
@pytest.mark.parametrize("door", [50.0, 60.0, 80.0, 95.0, 99.0, 99.5, 99.9])
def test_a_floored_refit_keeps_the_doors_cosine(engine, people_scores, fars, door):
    fit = fit_calibration(people_scores, *fars, engine.calibration, door_threshold=door)
    refit = Calibration(fit["a"], fit["b"], "")
    for level in (80.0, 99.0, door):
        assert similarity_to_cosine(level, refit) >= similarity_to_cosine(level, engine.calibration), level


def test_calibrate_write_never_loosens_a_door_above_99(models_dir, faces_dir, tmp_path):
    """Real faces, the shipped calibration as the floor, a door at Similarity 99.5: with
    --far-at-80 1e-5 --far-at-99 1e-6 the anchor 99 is kept at cosine 0.520 but the fit is steeper
    (a = 31.0 against 21.9), and before the fix the file written put 99.5 at cosine 0.5425
    instead of 0.5518 (99.9: 0.5945 instead of 0.6254) without --allow-looser."""
    local = tmp_path / "models"
    shutil.copytree(models_dir, local)
    (local / "calibration.toml").unlink(missing_ok=True)
    door = 99.5
    env = {**os.environ, "FACELINK_MODELS__MODELS_DIR": str(local), "XDG_DATA_HOME": str(tmp_path / "data"),
           "FACELINK_MATCHING__SIMILARITY_THRESHOLD": str(door)}
    proc = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "calibrate", str(faces_dir / "people"),
                           "--far-at-80", "1e-5", "--far-at-99", "1e-6", "--write", "--silent"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    version = json.loads(proc.stdout)["face_model_version"]
    shipped = calibration_for(version)
    written = calibration_for(version, local)
    assert written.source is not None  # the re-fit is what the door loads now
    assert similarity_to_cosine(door, written) >= similarity_to_cosine(door, shipped)
