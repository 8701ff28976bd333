"""A liveness check that raises must not leave the frame's face match behind as a "match" that
never passed liveness: otherwise frames whose check failed count toward GRANTED (found in review)."""

from __future__ import annotations

from facelink.device.assembly import build_components
from facelink.device.matcher import UserIndex
from facelink.device.pipeline import DoorPipeline
from facelink.enroll import faces, users

from .test_pipeline import _frame


def _door(ctx, faces_dir, engine, make_settings) -> DoorPipeline:
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    index = UserIndex(ctx.store, "door", engine.model_version)
    index.load()
    # default liveness: FROZEN_FEED on; a pasted still photo is a frozen feed (never live)
    settings = make_settings(matching={"track_max_age_s": 5.0}, liveness={"enabled": True})
    return DoorPipeline(engine, index, build_components(settings, engine))


def _run(door, faces_dir, frames) -> tuple[list, list]:
    decisions, errors = [], []
    for i in frames:
        try:
            decisions += door.process(_frame(faces_dir, "obama", i), 0.1 * i)
        except Exception as exc:  # noqa: BLE001 - the daemon reports it (fail_closed) and goes on
            errors.append(exc)
    return decisions, errors


def test_a_still_photo_is_never_granted(ctx, faces_dir, engine, make_settings):
    door = _door(ctx, faces_dir, engine, make_settings)
    decisions, errors = _run(door, faces_dir, range(10))
    assert not errors and "GRANTED" not in [d.decision for d in decisions]


def test_frames_whose_liveness_check_failed_do_not_count_toward_granted(ctx, faces_dir, engine, make_settings,
                                                                         monkeypatch):
    """A still photo of an enrolled user; the liveness check fails (raises) on three frames, as
    a face-mesh/TFLite or depth read error would, then works again. Each failed frame is an
    ERROR (door locked), but its face match was recorded before the check ran and stays in the
    track's window as a plain "match": the next working frame makes 3 of 5 -> GRANTED for a
    face that never passed liveness."""
    door = _door(ctx, faces_dir, engine, make_settings)
    checker = door.components.liveness
    real = checker.check
    calls = []

    def flaky(track_id, face, frame, now):
        calls.append(frame.index)
        if len(calls) <= 3:
            raise RuntimeError("face mesh: TFLite invoke failed")
        return real(track_id, face, frame, now)

    monkeypatch.setattr(checker, "check", flaky)
    decisions, errors = _run(door, faces_dir, range(10))
    assert len(errors) == 3  # each reported by the daemon as ERROR
    granted = [d for d in decisions if d.decision == "GRANTED"]
    assert granted == [], f"a face that never passed liveness was granted: {granted}"
