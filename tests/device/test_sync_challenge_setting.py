"""sync.challenge_every_s reaches the door's follower (README "Held-back heads"): the setting is
read by the real daemon's sync, not only by the Follower the fleet tests build."""

from __future__ import annotations

from facelink.fleet.signing import generate_keypair

from .conftest import door_daemon


def test_the_door_follows_with_the_configured_challenge_period(tmp_path, make_settings, engine):
    generate_keypair(tmp_path / "desk.key", tmp_path / "desk.pub")
    settings = make_settings(camera={"source": str(tmp_path)}, mqtt={"port": 1},
                             sync={"enabled": True, "challenge_every_s": 7_200.0},  # not the default
                             fleet={"trusted_keys": [str(tmp_path / "desk.pub")]})
    daemon = door_daemon(settings, engine)
    try:
        assert daemon.sync.follower.challenge_every_s == 7_200.0
    finally:
        daemon.shutdown(flush_timeout_s=1)


def test_the_door_requires_answered_challenges_by_default(tmp_path, make_settings, engine):
    """Unless the installer turns it off, the door's copy is fresh only while the desk answers its
    challenges (README "Held-back heads": on by default since 2026-12-07)."""
    generate_keypair(tmp_path / "desk.key", tmp_path / "desk.pub")
    settings = make_settings(camera={"source": str(tmp_path)}, mqtt={"port": 1}, sync={"enabled": True},
                             fleet={"trusted_keys": [str(tmp_path / "desk.pub")]})
    daemon = door_daemon(settings, engine)
    try:
        assert daemon.sync.follower.challenge_every_s == 3_600.0
        assert daemon.sync.follower.stale()  # nothing answered yet (the broker is unreachable here)
    finally:
        daemon.shutdown(flush_timeout_s=1)
