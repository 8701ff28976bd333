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
