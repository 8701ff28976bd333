"""Bulk enrollment: folders and CSV rosters; one bad file never stops the batch; resumable."""

from __future__ import annotations

import shutil

from facelink.enroll import bulk, faces


def test_folder_with_bad_files(ctx, faces_dir, tmp_path):
    folder = tmp_path / "badges"
    for person in ("obama", "biden"):
        (folder / person).mkdir(parents=True)
        shutil.copy(faces_dir / "people" / person / "1.jpg", folder / person / "1.jpg")
    (folder / "obama" / "broken.jpg").write_bytes(b"not an image")
    (folder / "biden" / "empty.png").write_bytes(b"")
    shutil.copy(faces_dir / "people/obama/2.jpg", folder / "obama" / "2.jpg")
    faces.create_collection(ctx, "c")
    entries = bulk.folder_entries(folder, users_from_subfolders=True)
    summary = bulk.index_entries(ctx, "c", entries).to_json()
    assert summary["Summary"] == {"Images": 5, "Indexed": 3, "Unindexed": 0, "Failed": 2}
    assert {f["Error"] for f in summary["Failed"]} == {"InvalidImageFormatException"}
    assert faces.describe_collection(ctx, "c")["UserCount"] == 2
    assert len(faces.list_faces(ctx, "c", user_id="obama")["Faces"]) == 2
    # resume: running again indexes nothing new
    again = bulk.index_entries(ctx, "c", entries).to_json()
    assert again["Summary"]["Indexed"] == 3
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 3


def test_roster_csv(ctx, faces_dir, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("image,external_image_id,user_id\n"
                      f"{faces_dir}/people/kit_harington/1.jpg,badge-001,kit\n"
                      f"{faces_dir}/people/kit_harington/2.jpg,badge-002,kit\n"
                      f"{faces_dir}/multi/five_people.jpg,group,\n"
                      "missing.jpg,badge-404,nobody\n"
                      f"{tmp_path}/roster.csv,not-an-image,\n")
    faces.create_collection(ctx, "c")
    summary = bulk.index_entries(ctx, "c", bulk.roster_entries(roster)).to_json()
    assert summary["Summary"]["Indexed"] == 3 and summary["Summary"]["Failed"] == 2
    assert [f["ExternalImageId"] for f in summary["Failed"]] == ["badge-404", "not-an-image"]
    kit = faces.list_faces(ctx, "c", user_id="kit")["Faces"]
    assert sorted(f["ExternalImageId"] for f in kit) == ["badge-001", "badge-002"]


def test_bad_rosters_and_folders_are_clear_errors(ctx, tmp_path):
    import pytest

    from facelink.errors import InvalidParameterException

    no_header = tmp_path / "r.csv"
    no_header.write_text("photo,badge\na.jpg,1\n")
    with pytest.raises(InvalidParameterException, match="image"):
        bulk.roster_entries(no_header)
    with pytest.raises(InvalidParameterException, match="cannot read"):
        bulk.roster_entries(tmp_path / "missing.csv")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidParameterException):
        bulk.roster_entries(binary)
    with pytest.raises(InvalidParameterException, match="folder not found"):
        bulk.folder_entries(tmp_path / "nope")


def test_a_re_run_never_brings_a_revoked_person_back(ctx, faces_dir, tmp_path):
    """Last month's badge folder run again (found in review: it re-created a deleted user and
    re-associated their face): an indexed image whose user was deleted, or whose face was
    disassociated, since fails with what to do instead; the rest is as before, and a plain
    re-run (resume) still indexes nothing new and fails nothing."""
    from facelink.enroll import users

    folder = tmp_path / "badges"
    for person in ("obama", "biden", "kit_harington"):
        (folder / person).mkdir(parents=True)
        shutil.copy(faces_dir / "people" / person / "1.jpg", folder / person / "1.jpg")
    faces.create_collection(ctx, "c")
    entries = bulk.folder_entries(folder, users_from_subfolders=True)
    first = bulk.index_entries(ctx, "c", entries).to_json()
    assert first["Summary"] == {"Images": 3, "Indexed": 3, "Unindexed": 0, "Failed": 0}
    assert bulk.index_entries(ctx, "c", entries).to_json()["Summary"] == first["Summary"]  # a resume
    users.delete_user(ctx, "c", "obama")  # revoked
    (biden_face,) = faces.list_faces(ctx, "c", user_id="biden")["Faces"]
    users.disassociate_faces(ctx, "c", "biden", [biden_face["FaceId"]])  # revoked
    again = bulk.index_entries(ctx, "c", entries).to_json()
    assert again["Summary"] == {"Images": 3, "Indexed": 1, "Unindexed": 0, "Failed": 2}
    failed = {f["Image"].split("/")[-2]: f for f in again["Failed"]}
    assert failed["obama"]["Error"] == "ResourceNotFoundException" and "create-user" in failed["obama"]["Message"]
    assert failed["biden"]["Error"] == "ConflictException" and "associate-faces" in failed["biden"]["Message"]
    listed = {u["UserId"] for u in users.list_users(ctx, "c")["Users"]}
    assert listed == {"biden", "kit_harington"}  # obama not created again
    assert faces.list_faces(ctx, "c", user_id="biden")["Faces"] == []  # not associated again
    assert faces.describe_collection(ctx, "c")["FaceCount"] == 3  # nothing indexed twice
    users.associate_faces(ctx, "c", "biden", [biden_face["FaceId"]])  # given back on purpose
    users.disassociate_faces(ctx, "c", "biden", [biden_face["FaceId"]])
    users.associate_faces(ctx, "c", "biden", [biden_face["FaceId"]])  # the last word: associated
    assert bulk.index_entries(ctx, "c", entries).to_json()["Summary"]["Failed"] == 1  # obama's row only
    # the full clean-up (found in review): obama's face deleted too, and the photo copied under
    # another name (another ExternalImageId): still not given back
    loose = [f["FaceId"] for f in faces.list_faces(ctx, "c")["Faces"] if f.get("UserId") is None]
    assert faces.delete_faces(ctx, "c", loose)["DeletedFaces"] == loose
    shutil.copy(folder / "obama" / "1.jpg", folder / "obama" / "renamed.jpg")
    last = bulk.index_entries(ctx, "c", bulk.folder_entries(folder, users_from_subfolders=True)).to_json()
    assert last["Summary"]["Failed"] == 2 and {f["Error"] for f in last["Failed"]} == {"ResourceNotFoundException"}
    assert "obama" not in {u["UserId"] for u in users.list_users(ctx, "c")["Users"]}
    users.create_user(ctx, "c", "obama")  # enrolled again on purpose: the desk's explicit act
    faces.index_faces(ctx, "c", folder / "obama" / "1.jpg", "obama-again", user_id="obama")
    assert bulk.index_entries(ctx, "c", bulk.folder_entries(folder, users_from_subfolders=True)
                              ).to_json()["Summary"]["Failed"] == 0


def test_a_face_deleted_by_an_import_replace_is_remembered(ctx, faces_dir, tmp_path):
    """An import --replace removes a face still associated with a user (the desk's file no longer
    holds it) before it removes the user (found in review: nothing was remembered, since the face
    was gone by the time DeleteUser looked, and a re-run of the folder created the user again and
    gave them their face back)."""
    from facelink.enroll import exchange, users

    folder = tmp_path / "badges"
    for person in ("obama", "biden"):
        (folder / person).mkdir(parents=True)
        shutil.copy(faces_dir / "people" / person / "1.jpg", folder / person / "1.jpg")
    faces.create_collection(ctx, "c")
    bulk.index_entries(ctx, "c", [e for e in bulk.folder_entries(folder, users_from_subfolders=True)
                                  if e.user_id == "biden"])
    exchange.export_faces(ctx, "c", tmp_path / "without_obama.npz")  # the desk's copy, obama revoked
    entries = bulk.folder_entries(folder, users_from_subfolders=True)
    assert bulk.index_entries(ctx, "c", entries).to_json()["Summary"]["Failed"] == 0
    assert len(faces.list_faces(ctx, "c", user_id="obama")["Faces"]) == 1
    out = exchange.import_faces(ctx, "c", tmp_path / "without_obama.npz", replace=True)
    assert out["RemovedFaces"] == 1 and out["RemovedUsers"] == ["obama"]
    again = bulk.index_entries(ctx, "c", entries).to_json()
    assert again["Summary"]["Failed"] == 1 and again["Failed"][0]["Error"] == "ResourceNotFoundException"
    assert "obama" not in {u["UserId"] for u in users.list_users(ctx, "c")["Users"]}
    assert faces.list_faces(ctx, "c", user_id="obama")["Faces"] == []


def test_a_face_moved_to_another_user_is_taken_from_the_first(ctx, faces_dir):
    """Store.set_user moving a face from one user to another (an import --replace applying the
    desk's file) takes the photo from the first (found in review: only a disassociation was
    remembered, so a row naming the first user under another ExternalImageId indexed it again)."""
    from facelink.enroll import users

    faces.create_collection(ctx, "c")
    users.create_user(ctx, "c", "a")
    users.create_user(ctx, "c", "b")
    faces.index_faces(ctx, "c", faces_dir / "people" / "obama" / "1.jpg", "x", user_id="a")
    (row,) = ctx.store.list_faces("c", 0, 10, user_id="a")
    assert [f.id for f in ctx.store.set_user("c", [row], "b")] == [row.id]
    assert ctx.store.revoked_image("c", row.image_sha256) == ["a"]
    entry = bulk.RosterEntry(faces_dir / "people" / "obama" / "1.jpg", "y", "a")
    out = bulk.index_entries(ctx, "c", [entry]).to_json()
    assert out["Summary"]["Failed"] == 1 and out["Failed"][0]["Error"] == "ConflictException"
    assert ctx.store.list_faces("c", 0, 10, user_id="a") == []


def test_a_photo_moved_to_the_right_user_is_not_refused_on_a_re_run(ctx, faces_dir, tmp_path):
    """A photo enrolled under a mistyped UserId, moved by the operator to the right one
    (disassociate-faces, create-user, associate-faces), and the corrected roster run again
    (found in review: the row failed on every run from then on, ConflictException saying to
    associate-faces, which had been done; nothing the operator could do cleared it)."""
    from facelink.enroll import users

    shutil.copy(faces_dir / "people" / "obama" / "1.jpg", tmp_path / "obama.jpg")
    (tmp_path / "wrong.csv").write_text("image,external_image_id,user_id\nobama.jpg,obama-1,barak\n")
    (tmp_path / "right.csv").write_text("image,external_image_id,user_id\nobama.jpg,obama-1,barack\n")
    faces.create_collection(ctx, "c")
    assert bulk.index_entries(ctx, "c", bulk.roster_entries(tmp_path / "wrong.csv")).to_json()["Summary"]["Failed"] == 0
    (face,) = faces.list_faces(ctx, "c", user_id="barak")["Faces"]
    users.disassociate_faces(ctx, "c", "barak", [face["FaceId"]])
    users.delete_user(ctx, "c", "barak")
    users.create_user(ctx, "c", "barack")
    users.associate_faces(ctx, "c", "barack", [face["FaceId"]])
    again = bulk.index_entries(ctx, "c", bulk.roster_entries(tmp_path / "right.csv")).to_json()
    assert again["Summary"] == {"Images": 1, "Indexed": 1, "Unindexed": 0, "Failed": 0}, again
    assert [f["FaceId"] for f in faces.list_faces(ctx, "c", user_id="barack")["Faces"]] == [face["FaceId"]]
    # the mistyped roster still does not give it back to the user it was taken from
    wrong = bulk.index_entries(ctx, "c", bulk.roster_entries(tmp_path / "wrong.csv")).to_json()
    assert wrong["Summary"]["Failed"] == 1
    assert "barak" not in {u["UserId"] for u in users.list_users(ctx, "c")["Users"]}


def test_a_revocation_made_by_another_desk_during_a_re_run_holds(tmp_path, engine, faces_dir, monkeypatch):
    """DisassociateFaces on another connection (a `facelink serve` worker) committed after a bulk
    run checked a row's photo and before it associated it (found in review: the run associated the
    face again and cleared the record of the revocation): the check is made again in the write."""
    from facelink.enroll import users
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    a = Context(Store(tmp_path / "desk.db"), lambda: engine)
    b = Context(Store(tmp_path / "desk.db"), lambda: engine)
    try:
        folder = tmp_path / "badges"
        (folder / "obama").mkdir(parents=True)
        shutil.copy(faces_dir / "people" / "obama" / "1.jpg", folder / "obama" / "1.jpg")
        faces.create_collection(a, "c")
        entries = bulk.folder_entries(folder, users_from_subfolders=True)
        assert bulk.index_entries(a, "c", entries).to_json()["Summary"]["Failed"] == 0
        (face,) = faces.list_faces(a, "c", user_id="obama")["Faces"]
        checked = a.store.revoked_image

        def checked_then_other_desk(*args, **kwargs):
            out = checked(*args, **kwargs)
            users.disassociate_faces(b, "c", "obama", [face["FaceId"]])  # revoked meanwhile
            return out

        monkeypatch.setattr(a.store, "revoked_image", checked_then_other_desk)
        again = bulk.index_entries(a, "c", entries).to_json()
        assert again["Summary"]["Failed"] == 1 and again["Failed"][0]["Error"] == "ConflictException"
        assert faces.list_faces(a, "c", user_id="obama")["Faces"] == []
        assert b.store.revoked_image("c", a.store.get_faces("c", [face["FaceId"]])[0].image_sha256) == ["obama"]
    finally:
        a.store.close()
        b.store.close()
