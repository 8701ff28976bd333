"""`facelink evaluate` and `facelink calibrate` on real labelled faces."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from facelink.models import evaluate as ev
from facelink.models.calibration import fit_calibration, write_calibration
from facelink.models.manifest import Calibration, ImpostorTail, calibration_for, read_overrides
from facelink.models.rates import Scores, all_pair_scores, clopper_pearson, cross_pair_scores
from facelink.models.similarity import cosine_to_similarity, similarity_to_cosine


def _facelink(models_dir, *args, data_home=None):
    env = {**os.environ, "FACELINK_MODELS__MODELS_DIR": str(models_dir)}
    if data_home is not None:
        env["XDG_DATA_HOME"] = str(data_home)
    proc = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_evaluate_report_plot_and_cache(models_dir, faces_dir, tmp_path):
    proc = _facelink(models_dir, "evaluate", str(faces_dir / "people"), "--json", "--configs",
                     "default,OpenCV reference", "--conditions", "face60", "--plot", str(tmp_path / "roc.png"),
                     data_home=tmp_path / "data")
    report = json.loads(proc.stdout)
    assert "default, clean" in proc.stderr  # the progress bar, on stderr
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    r = report["configs"]["default"]
    assert r["data"]["identities"] == 8 and r["data"]["impostor_pairs"] > 200 and r["data"]["genuine_pairs"] > 20
    assert r["data"]["no_face"]["count"] == 0
    assert r["at_threshold"]["far"]["count"] == 0  # no stranger at Similarity 99
    assert r["at_threshold"]["far"]["ci95"][1] == pytest.approx(clopper_pearson(0, r["data"]["impostor_pairs"])[1], rel=1e-3)
    assert [row["similarity"] for row in r["threshold_table"]] == [80, 90, 95, 99, 99.5]
    assert r["tar_at_far"]["0.0001"] is None  # not measurable on this little data: said, not guessed
    door = r["door"]["open_set"]["8"]  # everyone enrolled: strangers leave-one-out
    assert door["stranger_granted"]["count"] == 0 and door["wrong_holder"]["count"] == 0
    assert door["right_holder"]["rate"] > 0.5
    assert abs(report["configs"]["OpenCV reference"]["eer"]["eer"] - r["eer"]["eer"]) < 0.05
    assert report["conditions"]["face60"]["genuine_pairs"] > 0
    # the embeddings are cached in the user data dir (0700/0600), never beside the data
    cache = tmp_path / "data" / "facelink" / "eval-cache"
    files = list(cache.iterdir())
    assert len(files) == 3  # default, OpenCV reference, default+face60
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    again = json.loads(_facelink(models_dir, "evaluate", str(faces_dir / "people"), "--json", "--no-door",
                                 "--silent", data_home=tmp_path / "data").stdout)
    assert again["configs"]["default"]["eer"] == r["eer"]


def test_cache_is_used_and_keyed(models_dir, faces_dir, tmp_path, model_settings):
    data = ev.load_dataset(faces_dir / "people", identities=3)
    first = ev.embed(data, model_settings, cache_dir=tmp_path)

    class NoEngine(Exception):
        pass

    from facelink.models import embed_cache

    def boom():
        raise NoEngine

    cache = embed_cache.EmbeddingCache(embed_cache.engine_key(model_settings), tmp_path)
    digests = [embed_cache.file_digest(p) for p in data.images]
    second = embed_cache.embed_all(boom, cache, data.images, digests)  # every photo cached: no engine
    np.testing.assert_array_equal(first.vectors, second.vectors)
    other = embed_cache.EmbeddingCache(embed_cache.engine_key(model_settings, "grey"), tmp_path)
    assert other.path != cache.path and not other.rows


def test_chunked_scores_equal_a_loop_over_pairs(monkeypatch):
    from facelink.models import rates

    monkeypatch.setattr(rates, "CHUNK", 7)
    rng = np.random.default_rng(1)
    v = rng.normal(size=(40, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[5] = np.nan  # no face
    labels = rng.integers(0, 6, 40)
    groups = np.where(labels == 5, 4, labels)  # identities 4 and 5 are one person
    s = all_pair_scores(v, labels, groups)
    gen = sorted(float(v[i] @ v[j]) for i in range(40) for j in range(i + 1, 40)
                 if 5 not in (i, j) and labels[i] == labels[j])
    imp = sorted(float(v[i] @ v[j]) for i in range(40) for j in range(i + 1, 40)
                 if 5 not in (i, j) and groups[i] != groups[j])
    np.testing.assert_allclose(s.genuine, gen, atol=1e-5)
    np.testing.assert_allclose(s.impostor, imp, atol=1e-5)
    c = cross_pair_scores(v, v, labels, groups)
    assert c.genuine.size == 2 * s.genuine.size and c.impostor.size == 2 * s.impostor.size


def test_rates_and_intervals():
    assert clopper_pearson(0, 266)[1] == pytest.approx(0.013772, rel=1e-4)
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.187086, rel=1e-4) and hi == pytest.approx(0.812914, rel=1e-4)
    assert clopper_pearson(0, 5_000_000)[1] == pytest.approx(3.689 / 5_000_000, rel=1e-3)
    s = Scores(np.sort(np.array([0.5, 0.6, 0.7, 0.9])), np.sort(np.linspace(-0.5, 0.55, 1000)))
    t = s.threshold_for_far(1e-2)
    assert s.far(t).k <= 10 and s.far(t - 1e-3).k > 10  # the lowest cosine with FAR <= 1e-2
    assert s.threshold_for_far(1e-4) is None  # 1000 pairs can't show 1e-4


def test_pairs_csv(faces_dir, tmp_path, model_settings):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("file_x,file_y,Decision\nobama/1.jpg,obama/2.jpg,Yes\nobama/1.jpg,biden/1.jpg,No\n"
                     "biden/1.jpg,biden/2.jpg,Yes\nkit_harington/1.jpg,rose_leslie/1.jpg,No\n")
    data = ev.load_dataset(faces_dir / "people", pairs)
    s = ev.scores_of(data, ev.embed(data, model_settings, cache_dir=tmp_path).vectors)
    assert s.genuine.size == 2 and s.impostor.size == 2
    assert s.genuine.min() > s.impostor.max()


def test_calibration_fit_and_floor(engine, faces_dir, tmp_path, model_settings):
    data = ev.load_dataset(faces_dir / "people")
    scores = ev.scores_of(data, ev.embed(data, model_settings, cache_dir=tmp_path).vectors)
    free = fit_calibration(scores, 1e-4, 1e-2)
    cal = Calibration(free["a"], free["b"], "")
    assert cosine_to_similarity(free["cosine_at_99"], cal) == pytest.approx(99, abs=0.01)
    assert "extrapolated" in free["method"]  # 266 impostor pairs can't measure 1e-4
    floored = fit_calibration(scores, 1e-4, 1e-2, engine.calibration)
    refit = Calibration(floored["a"], floored["b"], "")
    # never looser: the cosine the door needed for 99 before still scores no more than 99
    assert cosine_to_similarity(similarity_to_cosine(99, engine.calibration), refit) <= 99.0 + 1e-3


def test_calibrate_write_is_atomic_private_and_used(models_dir, faces_dir, tmp_path):
    import shutil

    local = tmp_path / "models"
    shutil.copytree(models_dir, local)
    (local / "calibration.toml").unlink(missing_ok=True)
    write_calibration(local, "other/version", Calibration(1.0, 2.0, 'kept "as is"\n'))
    out = json.loads(_facelink(local, "calibrate", str(faces_dir / "people"), "--write", "--silent",
                               data_home=tmp_path / "data").stdout)
    path = local / "calibration.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in local.iterdir() if p.name.endswith(".tmp")]
    cal = calibration_for(out["face_model_version"], local)
    assert out["lowest_door_threshold"] == 50.0  # 266 impostor pairs: too few to measure 1 in 100
    assert (cal.a, cal.b) == (out["a"], out["b"]) and "impostor pairs" in cal.fitted_on
    assert cal.impostor_tail is not None and cal.impostor_tail.pairs == out["impostor_pairs"]
    assert read_overrides(path)["other/version"].fitted_on == 'kept "as is"\n'  # escaped, and not lost


def test_calibrate_never_writes_a_fit_the_door_would_refuse(models_dir, faces_dir, tmp_path):
    """`calibrate --write` checks the fit against this configuration's door threshold first: at
    Similarity 40 a door on this 266-pair fit would exit 78, so nothing is written (exit 2)."""
    import shutil

    local = tmp_path / "models"
    shutil.copytree(models_dir, local)
    (local / "calibration.toml").unlink(missing_ok=True)
    env = {**os.environ, "FACELINK_MODELS__MODELS_DIR": str(local), "XDG_DATA_HOME": str(tmp_path / "data"),
           "FACELINK_MATCHING__SIMILARITY_THRESHOLD": "40"}
    proc = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "calibrate", str(faces_dir / "people"),
                           "--write", "--silent"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    error = json.loads(proc.stderr.strip().splitlines()[-1])
    assert error["__type"] == "InvalidParameterException"
    assert "not written" in error["Message"] and "similarity_threshold = 40" in error["Message"]
    assert not (local / "calibration.toml").exists()


@pytest.mark.parametrize("text", [
    '[calibration."v"]\na = "x"\n',
    '[calibration."v"]\na = 1' + "0" * 400 + '\nb = 0\n',  # too large for a float
    '[calibration."v"]\na = 20\nb = -6\n[calibration."v".impostor_tail]\npairs = 1000000000000000000\n'
    'cosine = [0.3, 0.4]\nat_or_above = [100, 10]\n',  # the rate arithmetic would overflow
])
def test_a_damaged_calibration_file_is_a_typed_error(tmp_path, text):
    from facelink.errors import ModelError

    (tmp_path / "calibration.toml").write_text(text)
    with pytest.raises(ModelError, match="cannot read"):
        calibration_for("v", tmp_path)


def test_manifest_calibration_is_measured():
    from facelink.models.manifest import load_manifest

    for version, cal in load_manifest().calibration.items():
        assert isinstance(cal.impostor_tail, ImpostorTail), version
        assert cal.impostor_tail.pairs > 1_000_000 and "CelebA" in cal.fitted_on


def test_unusable_datasets_are_clear_errors(tmp_path):
    from facelink.errors import InvalidParameterException

    with pytest.raises(InvalidParameterException, match="not found"):
        ev.load_dataset(tmp_path / "nope")
    (tmp_path / "one" / "only_person").mkdir(parents=True)
    with pytest.raises(InvalidParameterException, match="two people"):
        ev.load_dataset(tmp_path / "one")
    with pytest.raises(InvalidParameterException, match="impostor"):
        fit_calibration(Scores(np.array([0.8]), np.array([0.1, 0.2])))
    bad = tmp_path / "pairs.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidParameterException, match="file_x"):
        ev.load_dataset(tmp_path, bad)
