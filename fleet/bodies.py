"""The desk's half of facelink.sync/1: change-set bodies built from its own store.

- :func:`body_for_batch`: a change-feed batch as a :class:`~.protocol.Delta` (state: whole face
  rows, deleted FaceIds, users with their credential, deleted users) or, when the feed could not
  say what changed (``batch.full``: pruned, another database, the collection re-created), a
  :class:`~.protocol.Rebase`. A deleted collection is a Delta with ``collection_deleted``.
- :func:`snapshot_chunks`: the whole collection as chunks of at most ``CHUNK_FACES`` faces, read
  page by page (100k faces never sit in memory at once). The caller holds one read transaction
  around it, so every chunk shows the same state: the one of the journal's seq it is sent at.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Iterator

from pydantic import ValidationError

from facelink.enroll.feed import ChangeBatch, UserState
from facelink.enroll.store import FaceRow, Store

from .protocol import CHUNK_FACES, FACE_ID, Delta, FacePut, Rebase, SnapshotChunk, UserPut, vector_to_b64

log = logging.getLogger(__name__)
MAX_DELTA_FACES = CHUNK_FACES * 5  # protocol.Delta's bound; a bigger batch is sent as a Rebase


def face_put(f: FaceRow) -> FacePut:
    return FacePut(face_id=f.face_id, user_id=f.user_id, external_image_id=f.external_image_id,
                   image_id=f.image_id, image_sha256=f.image_sha256, confidence=f.confidence,
                   bounding_box=f.bounding_box, embedding=vector_to_b64(f.embedding))


def _puts(faces: tuple[FaceRow, ...] | list[FaceRow]) -> tuple[list[FacePut], list[str]]:
    """The faces as FacePut; a row facelink.sync/1 cannot carry is not sent (fail closed: a door
    never grants on a face it does not hold) but named as deleted, so a door drops its older copy."""
    puts, refused = [], []
    for f in faces:
        try:
            puts.append(face_put(f))
        except (ValidationError, ValueError) as exc:
            log.warning("face %s of %s cannot be sent to the doors (sent as deleted): %s", f.face_id,
                        f.collection_id, str(exc).splitlines()[0])
            if re.fullmatch(FACE_ID, f.face_id):
                refused.append(f.face_id)
    return puts, refused


def user_put(u: UserState) -> UserPut:
    return UserPut(user_id=u.user_id, credential=u.credential)


def body_for_batch(batch: ChangeBatch) -> Delta | Rebase:
    if batch.full and batch.collection is None:
        return Delta(feed_position=batch.position, collection_deleted=True)
    if batch.full:
        return Rebase(feed_position=batch.position, reason="the change feed cannot say what changed")
    if len(batch.faces) > MAX_DELTA_FACES:
        return Rebase(feed_position=batch.position, reason=f"{len(batch.faces)} faces changed at once")
    puts, refused = _puts(batch.faces)
    return Delta(feed_position=batch.position, faces_put=puts,
                 faces_deleted=sorted({*batch.faces_deleted, *refused}), users_put=[user_put(u) for u in batch.users],
                 users_deleted=list(batch.users_deleted))


def snapshot_chunks(store: Store, collection_id: str, feed_position: int) -> Iterator[SnapshotChunk]:
    """Every face and user of the collection, in chunks (call inside ``store.read_transaction()``)."""
    faces = store.count("faces", collection_id)
    users = [UserState(u, c) for u, c in store.query(
        "SELECT user_id, credential FROM users WHERE collection_id = ? ORDER BY user_id", (collection_id,))]
    per_users = CHUNK_FACES * 5
    chunks = max(1, math.ceil(faces / CHUNK_FACES), math.ceil(len(users) / per_users))
    snapshot_id = uuid.uuid4().hex
    after = 0
    for i in range(chunks):
        rows = store.list_faces(collection_id, after, CHUNK_FACES)
        if rows:
            after = rows[-1].id
        yield SnapshotChunk(snapshot_id=snapshot_id, chunk=i, chunks=chunks, feed_position=feed_position,
                            faces_put=_puts(rows)[0],
                            users_put=[user_put(u) for u in users[i * per_users:(i + 1) * per_users]])
