"""card_and_face: a badge revoked while its verification window is open (found in review). README: "a
badge revoked at the desk stops opening the door ... the running daemon picks the change up
within reload_interval_s". The open claim kept the holder's user id for the whole card_window_s
(10 s by default), so the face still opened the door with the revoked badge seconds later."""

from __future__ import annotations

from facelink.access.badges import BadgeRead
from facelink.enroll import credentials

from .test_factors import OBAMA, _door, _frames


def test_a_badge_revoked_during_its_window_opens_nothing(ctx, faces_dir, engine, make_settings):
    door = _door(ctx, faces_dir, engine, make_settings, "card_and_face", window_s=10.0)
    assert door.badge(BadgeRead(OBAMA, "serial"), 0.0) == []  # obama taps: 1:1 check for 10 s
    credentials.delete_user_credential(ctx, "door", "obama")  # the desk revokes the badge at t = 0.1
    door.index.refresh(0)  # the door has picked the change up (reload_interval_s)
    assert ctx.store.user_by_credential("door", OBAMA) is None
    late = _frames(door, faces_dir, "obama", 30)  # his face at t = 3.0 ... 3.5 (> reload_interval_s + 1 s)
    assert "GRANTED" not in [d.decision for d in late], \
        f"a badge revoked 3 s earlier still opened the door: {[(d.decision, d.factors) for d in late]}"
    revoked = [d for d in late if d.decision == "DENIED_UNKNOWN_CARD"]
    assert [(d.user_id, d.factors) for d in revoked] == [("obama", ("card",))]
    assert revoked[0].payload()["reason"].startswith("badge H10301:18:1001")  # the schema takes it
