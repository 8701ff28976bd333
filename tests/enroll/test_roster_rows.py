"""A roster is a file someone typed: a short row or a path the system cannot even look up is that
row's failure in the summary, never a traceback that stops the batch (README: "one bad file never
stops the batch")."""

from __future__ import annotations

import pytest

from facelink.enroll import bulk, faces
from facelink.errors import InvalidParameterException
from facelink.models.image import decode_image


def test_a_short_row_and_an_unlookable_path_fail_alone(ctx, faces_dir, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("external_image_id,image,user_id\n"
                      "short-row\n"  # no image cell at all
                      f"too-long,{'a' * 300}.jpg,\n"  # stat(): ENAMETOOLONG
                      f"kit-1,{faces_dir}/people/kit_harington/1.jpg,kit\n")
    faces.create_collection(ctx, "c")
    summary = bulk.index_entries(ctx, "c", bulk.roster_entries(roster)).to_json()
    assert summary["Summary"] == {"Images": 3, "Indexed": 1, "Unindexed": 0, "Failed": 2}, summary
    assert [(f["ExternalImageId"], f["Error"]) for f in summary["Failed"]] == [
        ("short-row", "InvalidParameterException"), ("too-long", "InvalidParameterException")]


def test_an_image_path_too_long_is_a_typed_error(tmp_path):
    with pytest.raises(InvalidParameterException, match="cannot read image file"):
        decode_image(tmp_path / ("a" * 300 + ".jpg"))
    with pytest.raises(InvalidParameterException, match="not found"):
        decode_image(tmp_path)
