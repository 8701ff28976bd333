"""The image fuzzer in CI: 200 seeded cases (tools/fuzz_images.py runs any number) through
detect-faces, index-faces and search-faces-by-image on a real collection, and the door's folder
camera over all of them."""

from __future__ import annotations

import fuzz_cases
import fuzz_images
from fuzz_images import API_TARGETS, DOCUMENTED, Options, Worker, run


def test_200_cases_end_in_a_typed_error_or_a_valid_result(tmp_path, models_dir, faces_dir):
    report = run(Options(seed=2026, cases=200, faces_dir=faces_dir, models_dir=models_dir, work_dir=tmp_path))
    assert not report.findings, report.summary()
    assert report.integrity == "ok"
    for target in API_TARGETS:  # every kind of ending was reached, not 200 refusals
        for outcome in {"ok"} | DOCUMENTED:
            assert report.outcomes[(target, outcome)] > 0, (target, outcome, report.summary())
    assert report.faces_indexed > 1  # index-faces wrote to the collection that integrity_check read
    camera = report.camera
    assert camera["frames"] == camera["expected"] > 0 and camera["frames"] + camera["skipped"] == camera["files"]


def test_cases_are_reproducible(faces_dir):
    photos = fuzz_cases.photos(faces_dir)
    first = [fuzz_cases.make_case(7, i, photos, faces_dir) for i in range(20)]
    assert first == [fuzz_cases.make_case(7, i, photos, faces_dir) for i in range(20)]
    assert first != [fuzz_cases.make_case(8, i, photos, faces_dir) for i in range(20)]


def test_hangs_and_stray_exceptions_are_findings(tmp_path, models_dir):
    opts = Options(models_dir=models_dir)
    worker = Worker(opts, tmp_path / "fuzz.db", tmp_path / "worker.log")
    try:  # loading the engine takes longer than a millisecond: a call past its deadline
        assert fuzz_images._check(worker.call({"op": "setup", "photo": "-"}, 0.001), opts) == "hang"
    finally:
        worker.stop()
    worker = Worker(opts, tmp_path / "fuzz.db", tmp_path / "worker.log")
    try:
        reply = worker.call({"op": "no-such-target"}, 120)  # an AttributeError
        assert fuzz_images._check(reply, opts) == "exception" and "Traceback" in reply["traceback"]
        reply = worker.call({"op": "detect-faces", "path": str(tmp_path / "missing.jpg")}, 120)
        assert fuzz_images._check(reply, opts) is None and reply["type"] == "InvalidParameterException"
    finally:
        worker.stop()
