"""An error whose message cannot be rendered (found in review): the pipeline carries such an error's
decisions on purpose (pipeline.describe_error: "a broken __str__ must not lose the step's
decisions"), but the daemon's fail_closed then raised on it, out of Daemon.run: no ERROR, and
the daemon ended (systemd restarts it; the same error again is a crash loop)."""

from __future__ import annotations

from .test_partial_steps import _door_daemon, _published, _two_faces


class Unprintable(RuntimeError):
    def __str__(self) -> str:
        raise ValueError("cannot render")


def test_an_error_that_cannot_be_rendered_is_still_an_error_decision(tmp_path, faces_dir, engine, make_settings,
                                                                     broker, monkeypatch):
    daemon = _door_daemon(tmp_path, faces_dir, engine, make_settings, broker)
    try:
        def process(frame, now):
            raise Unprintable()

        monkeypatch.setattr(daemon.pipeline, "process", process)
        try:
            daemon._frame(_two_faces(faces_dir))
        except Exception as exc:  # noqa: BLE001 - as Daemon.run does
            daemon.fail_closed(exc)  # on main: ValueError escapes here (and out of run())
        assert [e["decision"] for e in _published(daemon)] == ["ERROR"]
        assert _published(daemon)[0]["reason"].startswith("Unprintable")
    finally:
        daemon.shutdown(flush_timeout_s=1)
