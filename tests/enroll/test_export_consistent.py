"""An export is one state of the collection, stamped no later than that state: a revocation made
at the desk while an export is being written is either wholly in the file or wholly after its
ExportedAt (which the door's rollback check orders files by). Until review 77 the faces, the
users and the badges were three reads at three moments and ExportedAt was stamped after them: a
DeleteUser + CreateUser of the same UserId during the export (a badge number re-issued to a new
person) gave a file stamped after the revocation that still associated the deleted person's face
with that UserId. Real models on a real face, real SQLite (a second desk connection)."""

from __future__ import annotations

import json
import time
from datetime import datetime

import numpy as np

from facelink.enroll import credentials, exchange, faces, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store


def test_a_revocation_during_an_export_is_not_half_in_it(ctx, faces_dir, tmp_path):
    faces.create_collection(ctx, "staff")
    users.create_user(ctx, "staff", "emp-42")
    face_id = faces.index_faces(ctx, "staff", faces_dir / "people/obama/1.jpg", "badge-42",
                                user_id="emp-42")["FaceRecords"][0]["Face"]["FaceId"]
    credentials.put_user_credential(ctx, "staff", "emp-42", "H10301:18:42")
    other_desk = Context(Store(ctx.store.path), ctx.engine_factory)
    revoked_at: list[float] = []
    read_users = ctx.store.list_users

    def revoked_meanwhile(*args, **kwargs):  # the second desk, between the export's reads
        if not revoked_at:
            users.delete_user(other_desk, "staff", "emp-42")
            users.create_user(other_desk, "staff", "emp-42")  # the id given to someone new
            revoked_at.append(time.time())
        return read_users(*args, **kwargs)

    ctx.store.list_users = revoked_meanwhile
    try:
        exchange.export_faces(ctx, "staff", tmp_path / "staff.npz")
    finally:
        ctx.store.list_users = read_users
        other_desk.store.close()
    with np.load(tmp_path / "staff.npz") as z:
        meta = json.loads(bytes(z["meta"]))
    (row,) = [f for f in meta["Faces"] if f["FaceId"] == face_id]
    exported_at = datetime.fromisoformat(meta["ExportedAt"]).timestamp()
    if row["UserId"] == "emp-42":  # the state before the revocation: stamped before it too
        assert exported_at < revoked_at[0], "a file stamped after the DeleteUser grants the deleted face"
        assert meta["Credentials"] == {"emp-42": "H10301:18:42"}
    else:  # the state after it
        assert row["UserId"] is None and meta["Credentials"] == {}
