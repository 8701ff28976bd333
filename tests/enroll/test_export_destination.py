"""An export written where it cannot go (a folder, a parent that is a file) is a typed
error naming the path, not a traceback, and leaves no half-written copy of the embeddings
(``<output>.tmp``) behind."""

from __future__ import annotations

import pytest

from facelink.enroll import exchange, faces
from facelink.errors import InvalidParameterException


@pytest.mark.parametrize("where", ["folder", "file as parent"])
def test_an_export_that_cannot_be_written_is_refused_and_leaves_nothing(ctx, faces_dir, tmp_path, where):
    faces.create_collection(ctx, "src")
    faces.index_faces(ctx, "src", faces_dir / "people/obama/1.jpg", "o1")
    (tmp_path / "out").mkdir()
    (tmp_path / "plain").write_text("x")
    output = {"folder": tmp_path / "out", "file as parent": tmp_path / "plain" / "e.npz"}[where]
    before = set(tmp_path.rglob("*"))
    with pytest.raises(InvalidParameterException, match="cannot write"):
        exchange.export_faces(ctx, "src", output)
    assert set(tmp_path.rglob("*")) - before == set()
