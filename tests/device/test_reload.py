"""SIGHUP's reload rebuilds everything derived from the settings, or keeps all of it."""

from __future__ import annotations

from facelink.device.daemon import Daemon
from facelink.enroll import faces, users

from .test_pipeline import _frame


def test_reload_to_six_of_eight_grants_after_six_frames(tmp_path, broker, make_settings, engine, ctx, faces_dir):
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    config = tmp_path / "door.toml"
    config.write_text("[matching]\nframes_required = 6\nframes_window = 8\ntrack_max_age_s = 4.0\n"
                      "[liveness]\nenabled = false\n")  # a pasted still photo: liveness tested elsewhere
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = Daemon(settings, config_path=config, engine=engine)
    try:
        before = daemon.pipeline.components
        daemon.reload()
        after = daemon.pipeline.components
        assert after is not before and after.tracker.max_age_s == 4.0
        assert (after.policy.frames_required, after.policy.frames_window) == (6, 8)
        decided_at = None
        for i in range(12):
            for d in daemon.pipeline.process(_frame(faces_dir, "obama", i), 0.3 * i):
                assert d.decision == "GRANTED" and d.user_id == "obama" and decided_at is None
                decided_at = i
        assert decided_at == 5  # the sixth matching frame, never later (not 40 frames, not never)
        config.write_text("[matching]\nframes_required = 9\nframes_window = 8\n")  # invalid
        daemon.reload()
        assert daemon.pipeline.components is after  # refused: the old configuration, whole
    finally:
        daemon.shutdown(flush_timeout_s=1)


def _obama_frames(daemon, faces_dir):
    """``run(n)``: the next n frames of obama through the daemon's pipeline, as (frame, decision)."""
    frames = iter(range(100))

    def run(n: int) -> list[tuple[int, str]]:
        out = []
        for _ in range(n):
            i = next(frames)
            out += [(i, d.decision) for d in daemon.pipeline.process(_frame(faces_dir, "obama", i), 0.1 * i)]
        return out

    return run


def test_what_an_undecided_track_saw_before_a_reload_does_not_count_after_it(tmp_path, broker, make_settings,
                                                                              engine, ctx, faces_dir):
    """Frames judged under the rules a reload replaces (another threshold, liveness off) must not
    count towards a decision under the new ones: after a SIGHUP an undecided track needs its N
    frames again (3 of 5 here), while a decided track keeps its decision (no second GRANTED)."""
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    config = tmp_path / "door.toml"
    config.write_text("[liveness]\nenabled = false\n")  # a pasted still photo: liveness tested elsewhere
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = Daemon(settings, config_path=config, engine=engine)
    try:
        daemon.reload()
        run = _obama_frames(daemon, faces_dir)

        assert run(2) == []  # two matching frames: not yet 3
        config.write_text("[liveness]\nenabled = false\n[matching]\nsimilarity_threshold = 99.5\n"
                          "cooldown_s = 0\n")  # no cooldown: only the kept decision stops a second GRANTED
        daemon.reload()
        assert daemon.pipeline.components.policy.threshold == 99.5
        assert run(2) == []  # the two before do not count: two new ones are not enough
        assert run(1) == [(4, "GRANTED")]  # the third under the new rules
        daemon.reload()
        assert run(3) == []  # decided before the reload: still decided, not granted again
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_a_reload_that_changes_nothing_or_is_refused_keeps_what_tracks_saw(tmp_path, broker, make_settings,
                                                                           engine, ctx, faces_dir):
    """A SIGHUP that changes nothing (logrotate, a stray `systemctl reload`) or that is refused
    (here: a threshold that would let strangers in) leaves the running rules and what the people
    at the door were seen doing: the third matching frame still grants."""
    faces.create_collection(ctx, "door")
    users.create_user(ctx, "door", "obama")
    faces.index_faces(ctx, "door", faces_dir / "people/obama/2.jpg", "badge", user_id="obama")
    config = tmp_path / "door.toml"
    config.write_text("[liveness]\nenabled = false\n[matching]\ncooldown_s = 0\n")
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = Daemon(settings, config_path=config, engine=engine)
    try:
        daemon.reload()
        running = daemon.pipeline.components
        run = _obama_frames(daemon, faces_dir)

        assert run(2) == []
        daemon.reload()  # the same file again
        assert daemon.pipeline.components is running
        assert run(1) == [(2, "GRANTED")]
        daemon.pipeline.components.tracker.restart(daemon.pipeline.components.tracker.tracks()[0])
        assert run(2) == []  # a new track: two of three frames
        config.write_text("[liveness]\nenabled = false\n[matching]\ncooldown_s = 0\nsimilarity_threshold = 0.99\n")
        daemon.reload()  # refused
        assert daemon.pipeline.components is running and running.policy.threshold == 99.0
        assert run(1) == [(5, "GRANTED")]
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_reload_refuses_a_change_of_factors_whole(tmp_path, broker, make_settings, engine, ctx):
    """Tightening face -> card_and_face by SIGHUP must not leave 1:N face GRANTED running: the
    factors and badge readers are built once, so the reload is refused and nothing changes."""
    faces.create_collection(ctx, "door")
    config = tmp_path / "door.toml"
    config.write_text("[matching]\nmode = \"card_and_face\"\nframes_required = 2\n")
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)})
    daemon = Daemon(settings, config_path=config, engine=engine)
    try:
        before = daemon.pipeline.components
        daemon.reload()
        assert daemon.pipeline.components is before
        assert daemon.settings.matching.mode == "face"
        assert daemon.pipeline.components.policy.frames_required == settings.matching.frames_required
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_a_reload_names_what_it_does_not_apply(tmp_path, broker, make_settings, engine, ctx, caplog):
    """SIGHUP applies [matching] and [liveness] only. A file that moves the door to another
    collection (one without the people the old one let in) or drops a compromised desk key must
    not be answered with "configuration unchanged": the log names each key left as it was."""
    faces.create_collection(ctx, "door")
    config = tmp_path / "door.toml"
    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(tmp_path)},
                             fleet={"trusted_keys": [tmp_path / "desk-a.pub", tmp_path / "desk-b.pub"]})
    daemon = Daemon(settings, config_path=config, engine=engine)
    try:
        config.write_text('[matching]\ncollection_id = "night-staff"\n'
                          '[fleet]\ntrusted_keys = ["%s"]\n' % (tmp_path / "desk-a.pub"))
        caplog.clear()
        with caplog.at_level("INFO", logger="facelink.device.daemon"):
            daemon.reload()
        assert daemon.settings.matching.collection_id == "door"  # needs a restart: kept
        assert not any("configuration unchanged" in r.getMessage() for r in caplog.records)
        (warning,) = [r for r in caplog.records if r.levelname == "WARNING" and "restart" in r.getMessage()]
        assert "matching.collection_id" in warning.getMessage() and "fleet.trusted_keys" in warning.getMessage()
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_a_reload_of_an_unchanged_file_under_source_says_unchanged(tmp_path, broker, models_dir, ctx, monkeypatch,
                                                                   caplog):
    """`facelink-device --source X` (the demo, the benches): a SIGHUP with the file as it was
    must say "configuration unchanged", not warn that camera.source -- which the file never set
    -- "is not applied until the daemon restarts" (a restart would not change it either)."""
    from facelink.device import main as device_main

    faces.create_collection(ctx, "door")
    config = tmp_path / "door.toml"
    config.write_text(f'[models]\nmodels_dir = "{models_dir}"\nthreads = 2\n'
                      f'[store]\ndatabase = "{tmp_path / "facelink.db"}"\n'
                      f'[mqtt]\nport = {broker.port}\noutbox = "{tmp_path / "outbox.db"}"\n'
                      '[matching]\ncollection_id = "door"\n')
    said: list[str] = []

    def run_once(daemon) -> int:  # instead of the frame loop: one SIGHUP, then stop
        try:
            caplog.clear()
            with caplog.at_level("INFO", logger="facelink.device.daemon"):
                daemon.reload()
            said.extend(r.getMessage() for r in caplog.records)
        finally:
            daemon.shutdown(flush_timeout_s=1)
        return 0

    monkeypatch.setattr(Daemon, "run", run_once)
    monkeypatch.setenv("FACELINK_CAMERA__SOURCE", "0")  # what main() sets is undone after the test
    assert device_main.main(["--config", str(config), "--source", str(tmp_path)]) == 0
    assert any("configuration unchanged" in m for m in said), said
    assert not any("restart" in m for m in said), said
