"""The door's health `stranger_risk` is computed from the faces the door compares with now: it
follows the index when the desk's enrollments arrive (refresh), not only at start and SIGHUP."""

from __future__ import annotations


def test_health_stranger_risk_follows_enrollments(tmp_path, broker, make_settings, engine, faces_dir):
    from facelink.device.daemon import Daemon
    from facelink.enroll import faces, users
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    settings = make_settings(mqtt={"port": broker.port}, camera={"source": str(faces_dir / "video/feat_man.mp4")})
    people = sorted(p.name for p in (faces_dir / "people").iterdir() if (p / "1.jpg").is_file())
    with Store(settings.store.database) as store:
        ctx = Context(store, lambda: engine)
        faces.create_collection(ctx, "door")
        users.create_user(ctx, "door", people[0])
        faces.index_faces(ctx, "door", faces_dir / "people" / people[0] / "1.jpg", user_id=people[0])
        daemon = Daemon(settings, engine=engine)
        try:
            start = daemon.health()["stranger_risk"]
            assert start["Comparisons"] == 1
            for name in people[1:]:  # the desk enrolls more people while the door runs
                users.create_user(ctx, "door", name)
                for photo in sorted((faces_dir / "people" / name).glob("*.jpg"))[:3]:
                    faces.index_faces(ctx, "door", photo, user_id=name)
            assert daemon.index.refresh(0)
            health = daemon.health()
            assert health["collection_faces"] > 1
            risk = health["stranger_risk"]
            # what the door states is computed from what it compares with now, as documented
            assert risk["Comparisons"] == health["collection_faces"]
            assert risk["ExpectedStrangerRate"] > start["ExpectedStrangerRate"]
            if risk["ExpectedStrangerRate"] > risk["MaxStrangerRate"]:
                assert risk["Warning"]
        finally:
            daemon.shutdown(flush_timeout_s=1)
