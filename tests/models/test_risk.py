"""The door's per-attempt stranger risk from the calibration's measured impostor tail."""

from __future__ import annotations

import math

import pytest

from facelink.errors import ConfigError
from facelink.models.manifest import Calibration, ImpostorTail, load_manifest
from facelink.models.risk import (
    MAX_DOOR_COMPARISON_FAR,
    MIN_DOOR_TAIL_PAIRS,
    UNMEASURED_DOOR_FLOOR,
    check_door_threshold,
    door_far,
    door_floor,
    lowest_door_threshold,
    per_comparison_far,
    stranger_risk,
)
from facelink.models.similarity import cosine_to_similarity, similarity_to_cosine

TAIL = ImpostorTail(1_000_000, (0.40, 0.45, 0.50, 0.55, 0.60), (1000, 100, 10, 0, 0))
CAL = Calibration(20.0, -6.0, "test", TAIL)


def test_far_interpolates_and_extrapolates_downwards():
    assert per_comparison_far(TAIL, 0.45) == (pytest.approx(1e-4), pytest.approx(1.2166e-4, rel=0.01))
    mid, _ = per_comparison_far(TAIL, 0.475)
    assert 1e-5 < mid < 1e-4
    beyond, upper = per_comparison_far(TAIL, 0.57)  # no pair measured: extrapolated, bounded
    assert 0 < beyond < 1e-5 and upper == pytest.approx(3.69e-6, rel=0.01)
    values = [per_comparison_far(TAIL, c)[0] for c in (0.40, 0.43, 0.47, 0.52, 0.58)]
    assert values == sorted(values, reverse=True)


def test_stranger_rate_grows_with_the_collection_and_warns():
    small = stranger_risk(CAL, 99, 10, max_rate=1e-4)
    big = stranger_risk(CAL, 99, 10_000, max_rate=1e-4)
    assert small["ExpectedStrangerRate"] < big["ExpectedStrangerRate"]
    assert small["Warning"] is None and "max_stranger_rate" in big["Warning"]
    assert big["Cosine"] == pytest.approx(similarity_to_cosine(99, CAL), abs=1e-4)
    assert stranger_risk(Calibration(20.0, -6.0, "old"), 99, 10)["Warning"]  # no tail: says so


def test_shipped_calibration_states_the_risk():
    cal = load_manifest().calibration["yunet-2023mar+sface-2021dec/int8bq"]
    one = stranger_risk(cal, 99, 1)
    assert 1e-7 < one["PerComparisonFalseAcceptRate"] <= 1e-5  # measured on the CelebA subset
    assert stranger_risk(cal, 99, 1000)["Warning"]  # a big door at 99 is above 1e-4 per attempt


def test_describe_collection_reports_the_risk(ctx, faces_dir):
    from facelink.enroll import faces

    faces.create_collection(ctx, "door")
    faces.index_faces(ctx, "door", faces_dir / "people" / "obama" / "1.jpg", external_image_id="obama")
    assert "FaceLinkExtensions" not in faces.describe_collection(ctx, "door")  # Rekognition's members only
    ctx.extras = True  # `facelink --facelink-extras describe-collection`
    out = faces.describe_collection(ctx, "door")
    assert out["FaceCount"] == 1
    risk = out["FaceLinkExtensions"]["StrangerRisk"]
    assert risk["Comparisons"] == 1 and risk["SimilarityThreshold"] == 99.0
    assert risk["ExpectedStrangerRate"] == risk["PerComparisonFalseAcceptRate"]
    ctx.max_stranger_rate = risk["ExpectedStrangerRate"] / 2
    assert faces.describe_collection(ctx, "door")["FaceLinkExtensions"]["StrangerRisk"]["Warning"]


def test_daemon_states_the_risk_at_start_and_on_reload(tmp_path, broker, make_settings, engine, faces_dir):
    from facelink.device.daemon import Daemon
    from facelink.enroll import faces, users
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(faces_dir / "video/feat_man.mp4")})
    with Store(settings.store.database) as store:
        ctx = Context(store, lambda: engine)
        faces.create_collection(ctx, "door")
        for name in ("obama", "biden"):  # the door matches users' faces
            users.create_user(ctx, "door", name)
            faces.index_faces(ctx, "door", faces_dir / "people" / name / "1.jpg", external_image_id=name,
                              user_id=name)
    config = tmp_path / "door.toml"
    config.write_text("[matching]\nmax_stranger_rate = 1e-9\n")
    daemon = Daemon(settings, engine=engine, config_path=config)
    try:
        start = daemon.health()["stranger_risk"]
        assert start["Comparisons"] == 2 and start["Warning"] is None  # 2 faces: ~1e-5 < 1e-4
        daemon.reload()  # the site lowered what it accepts
        after = daemon.health()["stranger_risk"]
        assert after["MaxStrangerRate"] == 1e-9 and "max_stranger_rate" in after["Warning"]
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_a_door_threshold_that_lets_strangers_in_is_refused():
    """Below the Similarity where 1 in 100 comparisons of two different people match, a door
    refuses to start (and a reload is refused): 0, or 99 written as 0.99, opens for anyone.
    The floor is the lowest 0.1 step within the limit: one step lower is over it."""
    for cal in load_manifest().calibration.values():
        lowest = lowest_door_threshold(cal.impostor_tail, cal)
        assert 30 < lowest < 60
        assert door_far(cal.impostor_tail, similarity_to_cosine(lowest, cal)) <= MAX_DOOR_COMPARISON_FAR
        assert door_far(cal.impostor_tail, similarity_to_cosine(lowest - 0.1, cal)) > MAX_DOOR_COMPARISON_FAR
        for threshold in (lowest, 80, 99, 100):
            check_door_threshold(cal, threshold)
        for threshold in (0, 0.99, round(lowest - 0.1, 1)):
            with pytest.raises(ConfigError, match=f"similarity_threshold = {threshold:g} would open the door"):
                check_door_threshold(cal, threshold)


def test_below_the_measured_grid_a_threshold_is_refused():
    """TAIL's first point (cosine 0.40) has a FAR of 1e-3, within the limit, but below it nothing
    was measured (the FAR there is only known to be higher): a threshold there is refused, and
    the lowest one accepted is the first 0.1 step above that point."""
    at_first_point = float(cosine_to_similarity(0.40, CAL))
    assert per_comparison_far(TAIL, similarity_to_cosine(0, CAL))[0] <= MAX_DOOR_COMPARISON_FAR  # what it said
    lowest = lowest_door_threshold(TAIL, CAL)
    assert lowest == pytest.approx(math.ceil(at_first_point * 10) / 10)
    check_door_threshold(CAL, lowest)
    for threshold in (0, 0.99, round(lowest - 0.1, 1)):
        with pytest.raises(ConfigError, match="would open the door"):
            check_door_threshold(CAL, threshold)
    hopeless = ImpostorTail(10_000, (0.40, 0.99), (9000, 5000))  # half of all pairs match even at cosine 0.99
    assert lowest_door_threshold(hopeless, CAL) is None
    with pytest.raises(ConfigError, match="cannot show that at most 0.01"):
        check_door_threshold(Calibration(20.0, -6.0, "test", hopeless), 99)


def test_without_a_measured_tail_a_fixed_floor_still_holds():
    """An old re-fit without an impostor tail cannot say where strangers match: 0 and 0.99 are
    refused all the same; from the floor up it is warned about (stranger_risk), not refused."""
    old = Calibration(20.0, -6.0, "old")
    for threshold in (0, 0.99, UNMEASURED_DOOR_FLOOR - 0.1):
        with pytest.raises(ConfigError, match="no measured impostor distribution"):
            check_door_threshold(old, threshold)
    for threshold in (UNMEASURED_DOOR_FLOOR, 99):
        check_door_threshold(old, threshold)


def test_the_floor_the_docs_quote_is_the_default_models(engine):
    """README and the setting's description quote the shipped calibration's floor: it is the
    one the default FaceModelVersion computes."""
    from pathlib import Path

    from facelink.config.settings import MatchingSettings

    lowest = lowest_door_threshold(engine.calibration.impostor_tail, engine.calibration)
    quoted = f"({lowest:g} with the shipped calibration)"
    assert quoted in MatchingSettings.model_fields["similarity_threshold"].description
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"**{lowest:g}** with the shipped calibration" in readme


@pytest.mark.parametrize("a,b", [(-20.0, 6.0), (0.0, -6.0), (float("nan"), -6.0), (20.0, float("inf"))])
def test_a_calibration_that_does_not_rise_with_the_cosine_is_refused(a, b):
    """A hand-edited or corrupt calibration (a <= 0, not finite) would turn the threshold check
    upside down (with a < 0 a stranger at cosine 0.1 scores 98): the door refuses to start."""
    with pytest.raises(ConfigError, match="re-fit"):
        check_door_threshold(Calibration(a, b, "edited", TAIL), 99)
    assert door_far(TAIL, float("nan")) == 1.0


def test_a_small_re_fit_cannot_lower_the_floor():
    """A re-fit on few impostor pairs says little about where 1 in 100 lies: with 100 pairs (1 at
    or above cosine 0.25) its rate read 0.01 at Similarity 40 and the door accepted it (and
    anything down to ~27). Below MIN_DOOR_TAIL_PAIRS the tail counts as unmeasured: floor 50."""
    small = Calibration(20.0, -6.0, "100 pairs", ImpostorTail(100, (0.20, 0.25, 0.30), (40, 1, 0)))
    assert MIN_DOOR_TAIL_PAIRS > 100
    for threshold in (27, 40, UNMEASURED_DOOR_FLOOR - 0.1):
        with pytest.raises(ConfigError, match="only 100 impostor pairs"):
            check_door_threshold(small, threshold)
    check_door_threshold(small, UNMEASURED_DOOR_FLOOR)
    assert door_floor(small) == UNMEASURED_DOOR_FLOOR


def test_the_floor_is_the_upper_limit_not_the_estimate():
    """1,000 pairs, 9 of them at or above the cosine of Similarity 40: the measured rate is 0.009,
    within the limit, but its 95 % upper limit (0.017) is not; 0 pairs at cosine 0.30 (Similarity
    50) is (0.0037)."""
    cal = Calibration(20.0, -6.0, "1,000 pairs", ImpostorTail(1000, (0.20, 0.25, 0.30), (400, 9, 0)))
    assert per_comparison_far(cal.impostor_tail, similarity_to_cosine(40, cal))[0] <= MAX_DOOR_COMPARISON_FAR
    assert door_far(cal.impostor_tail, similarity_to_cosine(40, cal)) == pytest.approx(0.0170, abs=5e-4)
    with pytest.raises(ConfigError, match="below 50"):
        check_door_threshold(cal, 40)
    assert lowest_door_threshold(cal.impostor_tail, cal) == 50.0 == door_floor(cal)


def test_a_small_re_fit_does_not_refuse_99():
    """300 pairs, 3 at or above the cosines around Similarity 99: the interpolated rate came to
    0.010000000000000002 and the door refused even 99. A tail too small to measure 1 in 100 now
    keeps the unmeasured floor."""
    a = 20.0
    cal = Calibration(a, math.log(99) - a * 0.27, "300 pairs",
                      ImpostorTail(300, (0.20, 0.25, 0.30, 0.35), (100, 3, 3, 0)))
    assert per_comparison_far(cal.impostor_tail, 0.27)[0] > MAX_DOOR_COMPARISON_FAR  # what it read
    for threshold in (UNMEASURED_DOOR_FLOOR, 80, 99):
        check_door_threshold(cal, threshold)


@pytest.mark.parametrize("seed", range(20))
def test_the_door_far_never_rises_with_the_cosine(seed):
    """The threshold search assumes it: on random valid tails (zeros inside, the last point, a
    sweep finer than the grid) the door's FAR is non-increasing, and the lowest threshold is
    accepted while the step below it is refused."""
    import random

    rng = random.Random(seed)
    n = rng.choice((1000, 50_000, 5_000_000))
    counts, k = [], n
    for _ in range(8):
        k = int(k * rng.choice((0.0, 0.05, 0.3, 0.6, 1.0)))
        counts.append(k)
    tail = ImpostorTail(n, tuple(round(0.2 + 0.01 * i, 2) for i in range(8)), tuple(counts))
    sweep = [0.19 + 0.0002 * i for i in range(500)]
    values = [door_far(tail, c) for c in sweep]
    assert all(b <= a for a, b in zip(values, values[1:]))
    cal = Calibration(20.0, -6.0, "random", tail)
    lowest = lowest_door_threshold(tail, cal)
    if lowest is not None:
        check_door_threshold(cal, lowest)
        if lowest >= 0.1:
            with pytest.raises(ConfigError):
                check_door_threshold(cal, round(lowest - 0.1, 1))


def test_a_refused_override_names_its_file(tmp_path):
    """A calibration read from <models_dir>/calibration.toml says so when the door refuses it, and
    how to go back to the shipped one; the shipped one names no file."""
    from facelink.models.calibration import write_calibration
    from facelink.models.manifest import calibration_for

    write_calibration(tmp_path, "v", Calibration(20.0, -6.0, "an old re-fit"))
    cal = calibration_for("v", tmp_path)
    with pytest.raises(ConfigError, match=f"read from {tmp_path / 'calibration.toml'}.*remove that file"):
        check_door_threshold(cal, 45)
    shipped = load_manifest().calibration["yunet-2023mar+sface-2021dec/int8bq"]
    with pytest.raises(ConfigError) as refused:
        check_door_threshold(Calibration(-1.0, 0.0, "edited", shipped.impostor_tail), 99)
    assert "calibration.toml" not in str(refused.value)


def test_equal_counts_read_exactly_between_grid_points():
    """450,000 pairs at or above both 0.25 and 0.26: in between the count is 450,000, not one
    more from float noise in the interpolation (which made the door's FAR rise and fall)."""
    from facelink.models.risk import _pairs_at_or_above

    tail = ImpostorTail(5_000_000, (0.24, 0.25, 0.26), (1_500_000, 450_000, 450_000))
    assert {_pairs_at_or_above(tail, 0.25 + 0.0001 * i) for i in range(100)} == {450_000.0}


def test_a_wide_gap_in_the_grid_is_not_interpolated():
    """A hand-edited tail with every pair at or above cosine 0.0 and one at 0.3: interpolating
    across the gap put the floor at Similarity 2.8. Across a gap wider than calibrate's 0.01 the
    door reads the count below, so the first accepted threshold is at cosine 0.3."""
    cal = Calibration(20.0, -6.0, "edited", ImpostorTail(100_000, (0.0, 0.3), (100_000, 1)))
    assert door_floor(cal) == pytest.approx(math.ceil(float(cosine_to_similarity(0.3, cal)) * 10) / 10)
    with pytest.raises(ConfigError):
        check_door_threshold(cal, 2.8)
