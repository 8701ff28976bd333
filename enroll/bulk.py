"""Bulk enrollment from a folder or a CSV roster: one bad file never stops the batch.

Re-running after an interruption is safe and fast: an image already indexed with the same
ExternalImageId is recognised by its SHA-256 and not indexed again. The summary reports what the
database holds afterwards.

A re-run never undoes a revocation (found in review: running last month's folder again brought a
deleted user back, with their face): a photo a face of which was taken from a user since
(DeleteUser, DisassociateFaces: ``revoked_images``, kept when the faces are deleted too, whatever
ExternalImageId the row gives it) fails a row that names a user, saying what to do to enroll them
again on purpose. An image indexed without a user is still associated with its row's user
(created if need be) on a later run.
"""

from __future__ import annotations

import csv
import queue
import re
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelink.errors import (
    ConflictException,
    FaceLinkError,
    InvalidParameterException,
    ResourceNotFoundException,
)
from facelink.models.engine import FaceEngine

from .context import Context
from .faces import (
    PreparedImage,
    already_indexed,
    image_bytes_and_digest,
    prepare_index,
    store_prepared,
    validate_index_args,
)
from .users import create_user

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class RosterEntry:
    image: Path
    external_image_id: str | None
    user_id: str | None


@dataclass
class BulkSummary:
    indexed: list[dict[str, Any]] = field(default_factory=list)
    unindexed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"Summary": {"Images": len(self.indexed) + len(self.unindexed) + len(self.failed),
                            "Indexed": len(self.indexed), "Unindexed": len(self.unindexed),
                            "Failed": len(self.failed)},
                "Indexed": self.indexed, "Unindexed": self.unindexed, "Failed": self.failed}


def _safe_id(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.\-:]", "_", text)[:255] or "image"


def folder_entries(folder: Path, *, users_from_subfolders: bool = False) -> list[RosterEntry]:
    """Every image under ``folder``; ExternalImageId is the file stem (sub/stem when nested).
    With ``users_from_subfolders`` the first sub-folder name is the UserId (people/<user>/x.jpg)."""
    if not folder.is_dir():
        raise InvalidParameterException(f"folder not found: {folder}")
    entries = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        rel = p.relative_to(folder)
        user = _safe_id(rel.parts[0]) if users_from_subfolders and len(rel.parts) > 1 else None
        entries.append(RosterEntry(p, _safe_id("/".join(rel.with_suffix("").parts).replace("/", ":")), user))
    return entries


def roster_entries(csv_path: Path) -> list[RosterEntry]:
    """CSV with a header: image,external_image_id,user_id (paths relative to the CSV's folder)."""
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "image" not in reader.fieldnames:
                raise InvalidParameterException(f"{csv_path}: the header must name an 'image' column")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidParameterException(f"cannot read roster {csv_path}: {exc}") from None
    base = csv_path.parent

    def cell(row: dict[str | None, Any], name: str) -> str:  # a short row's missing cells are None
        value = row.get(name)
        return value.strip() if isinstance(value, str) else ""

    return [RosterEntry(base / cell(r, "image"), cell(r, "external_image_id") or None, cell(r, "user_id") or None)
            for r in rows]


def _record(summary: BulkSummary, item: dict[str, Any], result: dict[str, Any]) -> None:
    if result["FaceRecords"]:
        faces = [r["Face"] for r in result["FaceRecords"]]
        summary.indexed.append({**item, "UserId": faces[0].get("UserId"), "FaceIds": [f["FaceId"] for f in faces]})
    else:
        reasons = sorted({r for u in result["UnindexedFaces"] for r in u["Reasons"]}) or ["NO_FACE_DETECTED"]
        summary.unindexed.append({**item, "Reasons": reasons})


def _not_restored(ctx: Context, collection_id: str, entry: RosterEntry, digest: str) -> None:
    """A photo a face of which was taken from a user since it was indexed (DeleteUser,
    DisassociateFaces; also when those faces were deleted since, and under any ExternalImageId):
    refused for a row that names a user, so that a bulk run never gives it back (the module's
    docstring). A row without a user indexes it unassociated (nobody is granted on it)."""
    if entry.user_id is None:
        return
    taken = ctx.store.revoked_image(collection_id, digest)
    if not taken or ctx.store.image_held_by(collection_id, digest, entry.user_id):
        # the row's user holds a face of this photo now, associated on purpose (a photo moved from
        # a mistyped user to the right one): nothing is given back (found in review: that row failed
        # on every run, saying to associate-faces, which had been done)
        return
    if not ctx.store.user_exists(collection_id, entry.user_id):
        raise ResourceNotFoundException(
            f"this photo's face was taken from user {taken[0]!r} (DeleteUser or DisassociateFaces) and user "
            f"{entry.user_id!r} does not exist: a bulk run does not create it again; to enroll them again on "
            "purpose, create-user, then index-faces --user-id or associate-faces")
    raise ConflictException(
        f"this photo's face was taken from user {taken[0]!r} (DeleteUser or DisassociateFaces): a bulk run "
        "does not give it back; to do so on purpose, associate-faces (or index-faces --user-id)")


def index_entries(ctx: Context, collection_id: str, entries: Iterable[RosterEntry], *,
                  quality_filter: str = "AUTO", max_faces: int = 1,
                  progress: Callable[[RosterEntry], None] | None = None,
                  workers: int = 1, engine_factory: Callable[[], FaceEngine] | None = None) -> BulkSummary:
    """Index every entry. With ``workers`` > 1 and an ``engine_factory`` (single-threaded
    engines), decoding, detection and embedding run on that many threads while this thread
    does the database writes in roster order."""
    summary = BulkSummary()
    ctx.collection_for_engine(collection_id)  # fail fast on a wrong collection, not per file
    engines: queue.Queue[FaceEngine] = queue.Queue()
    if workers > 1 and engine_factory is not None:
        for _ in range(workers):
            engines.put(engine_factory())
    else:
        workers = 1
        engines.put(ctx.engine)

    def compute(data: Any, digest: str) -> PreparedImage:
        engine = engines.get()
        try:
            return prepare_index(engine, data, digest, quality_filter, max_faces, ctx.keep_thumbnails)
        finally:
            engines.put(engine)

    def finish(entry: RosterEntry, item: dict[str, Any], job: Future[PreparedImage]) -> None:
        try:
            prepared = job.result()
            _ensure_user(entry)
            _record(summary, item, store_prepared(ctx, collection_id, prepared, entry.external_image_id,
                                                  entry.user_id, unless_taken=True))
        except FaceLinkError as exc:
            summary.failed.append({**item, "Error": exc.code, "Message": exc.message})
        if progress is not None:
            progress(entry)

    def _ensure_user(entry: RosterEntry) -> None:
        if entry.user_id and not ctx.store.user_exists(collection_id, entry.user_id):
            create_user(ctx, collection_id, entry.user_id)

    pending: deque[tuple[RosterEntry, dict[str, Any], Future[PreparedImage]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enroll") as pool:
        for entry in entries:
            item = {"Image": str(entry.image), "ExternalImageId": entry.external_image_id}
            try:
                validate_index_args(collection_id, entry.external_image_id, max_faces, quality_filter,
                                    entry.user_id)
                data, digest = image_bytes_and_digest(entry.image)
                _not_restored(ctx, collection_id, entry, digest)
                if ctx.store.faces_by_image(collection_id, digest, entry.external_image_id):
                    _ensure_user(entry)  # indexed without a user before: its row's user now
                done = already_indexed(ctx, collection_id, digest, entry.external_image_id, entry.user_id,
                                       unless_taken=True)  # checked again in the write
            except FaceLinkError as exc:
                summary.failed.append({**item, "Error": exc.code, "Message": exc.message})
                if progress is not None:
                    progress(entry)
                continue
            if done is not None:  # resumed run: indexed before (and now associated)
                _record(summary, item, done)
                if progress is not None:
                    progress(entry)
                continue
            pending.append((entry, item, pool.submit(compute, data, digest)))
            while len(pending) >= 2 * workers:
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    return summary
