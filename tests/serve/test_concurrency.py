"""Concurrent boto3 writers through `facelink serve` while the door's index follows the same
database: every association the endpoint reports reaches the door, and the database stays whole."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .conftest import photo


def test_concurrent_writers_and_the_door_reading(endpoint, make_client, faces_dir):
    from facelink.device.matcher import UserIndex
    from facelink.enroll.store import Store

    rek = make_client()
    rek.create_collection(CollectionId="door")
    people = {"obama": ["1.jpg", "2.jpg"], "biden": ["1.jpg", "2.jpg"], "rose_leslie": ["1.jpg", "2.jpg"]}
    db = Path(endpoint[1]["FACELINK_STORE__DATABASE"])
    store = Store(db, readonly=True)
    index = UserIndex(store, "door", store.get_collection("door").face_model_version)
    index.load()
    errors: list[BaseException] = []

    def enroll(user: str, files: list[str]) -> None:
        try:
            client = make_client(retries=5)
            client.create_user(CollectionId="door", UserId=user)
            for f in files:
                out = client.index_faces(CollectionId="door", Image={"Bytes": photo(faces_dir, f"people/{user}/{f}")},
                                         ExternalImageId=f"{user}-{f}", MaxFaces=1)
                client.associate_faces(CollectionId="door", UserId=user,
                                       FaceIds=[out["FaceRecords"][0]["Face"]["FaceId"]])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=enroll, args=item) for item in people.items()]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # the door polls while the desk writes
        index.refresh(0)
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert errors == []
    expected = {(f["FaceId"], f["UserId"]) for p in rek.get_paginator("list_faces").paginate(CollectionId="door")
                for f in p["Faces"]}
    assert len(expected) == 6 and all(u for _, u in expected)
    deadline = time.monotonic() + 60
    while len(index) != len(expected):
        assert time.monotonic() < deadline, "the door did not catch up with the endpoint's writes"
        index.refresh(0)
        time.sleep(0.1)
    for face in store.get_faces("door", [f for f, _ in expected]):  # each face finds its own user
        match = index.best(face.embedding)
        assert (match.face_id, match.user_id) in expected and match.user_id == face.user_id
    assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    store.close()
