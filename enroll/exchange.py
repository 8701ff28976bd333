"""ExportFaces / ImportFaces: the owner's embeddings in a portable, documented file.

Format (``.npz``: a zip of ``.npy`` members, readable with numpy alone, no pickle):
  ``embeddings``  float32 [N, 128], L2-normalised, row i belongs to faces[i]
  ``meta``        uint8 bytes of a UTF-8 JSON object (:class:`ExportMeta`):
      {"Format": "facelink-faces", "FormatVersion": 1, "FaceModelVersion": ..., "CollectionId": ...,
       "ExportedAt": ISO-8601, "Users": [UserId, ...], "Credentials": {UserId: "H10301:18:12345"},
       "Faces": [{"FaceId", "ImageId", "ExternalImageId", "UserId", "BoundingBox", "Confidence"}],
       "EmbeddingsSha256": sha256 of the embeddings' bytes}
  ``signature``   (signed exports) uint8 bytes of the JSON ``{"Algorithm", "KeyId", "Signature"}``
                  over the exact ``meta`` bytes

An import reads a file as untrusted input, in this order, and nothing is written before the last
step: the zip's members and their declared sizes (``meta`` at most :data:`MAX_META_BYTES`,
``signature`` at most :data:`MAX_SIGNATURE_BYTES`, ``embeddings`` exactly its ``.npy`` header
plus N x 128 float32 for the N faces ``meta`` lists, at most :data:`MAX_FACES`: nothing is
decompressed beyond what the file declares), the signature (with trusted keys), ``meta`` against
:class:`ExportMeta` (ids by ``enroll/validate.py``'s rules; unique FaceIds and Users; a face's
UserId and every Credentials key must be one of the file's Users), the source collection, the
embeddings (checksum, unit vectors); then the whole import is ONE store transaction (collection,
users, badges, faces, the signed-export record), so a refusal at any point changes nothing.
Every refusal of the file's content is an ``InvalidParameterException`` (exit 2), except the
signature's and the source collection's (``InvalidSignatureException``, exit 10) and a state
conflict with the target (``ConflictException``, exit 6).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from facelink.config.paths import open_private
from facelink.errors import ConflictException, InvalidParameterException, InvalidSignatureException
from facelink.models.embedder import EMBEDDING_DIM, not_embeddings
from facelink.mqtt.schema import aware_iso, parse_timestamp

from . import validate
from .context import Context

FORMAT = "facelink-faces"
FORMAT_VERSION = 1

MAX_FACES = 1_000_000  # faces (embedding rows) in one file
MAX_META_BYTES = 256 * 1024 * 1024  # the meta JSON: ~850,000 faces at the exporter's ~300 bytes each
MAX_SIGNATURE_BYTES = 4096  # {"Algorithm", "KeyId", "Signature"}: ~150 bytes
MAX_NPY_HEADER_BYTES = 4096  # numpy writes 128 bytes
MAX_FILE_BYTES = MAX_META_BYTES + MAX_FACES * EMBEDDING_DIM * 4 + (1 << 20)  # on disk
MEMBERS = ("embeddings.npy", "meta.npy", "signature.npy")
ROW_BYTES = EMBEDDING_DIM * 4


# -- the meta object: one schema, checked before anything is used ----------------------------
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
UserIdText = Annotated[str, Field(pattern=validate.whole(validate.USER_ID))]
BoxKey = Literal["Width", "Height", "Left", "Top"]


class ExportFace(BaseModel):
    """One row of ``Faces`` (the rules of ``enroll/validate.py``; ImageId as the desk makes it)."""

    model_config = _STRICT
    FaceId: str = Field(pattern=validate.whole(validate.FACE_ID))
    ImageId: str = Field(pattern=r"^[A-Za-z0-9_.\-:]{1,64}$")
    ExternalImageId: str | None = Field(None, pattern=validate.whole(validate.EXTERNAL_IMAGE_ID))
    UserId: UserIdText | None = None
    BoundingBox: dict[BoxKey, float]
    Confidence: float = Field(ge=0, le=100)


class ExportMeta(BaseModel):
    """The ``meta`` member (FormatVersion 1). Unknown keys are refused."""

    model_config = _STRICT
    Format: Literal["facelink-faces"]
    FormatVersion: int = Field(ge=FORMAT_VERSION, le=FORMAT_VERSION)  # strict: not True (Literal[1] takes it)
    CollectionId: str = Field(pattern=validate.whole(validate.COLLECTION_ID))
    FaceModelVersion: str = Field(pattern=r"^[\x21-\x7e]{1,255}$")
    ExportedAt: str = Field(max_length=64)
    Users: list[UserIdText] = Field(max_length=MAX_FACES)
    Credentials: dict[UserIdText, Annotated[str, Field(max_length=64)]] = Field(
        default_factory=dict, max_length=MAX_FACES)  # older exports have none
    Faces: list[ExportFace] = Field(max_length=MAX_FACES)
    EmbeddingsSha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("ExportedAt")
    @classmethod
    def _iso_with_zone(cls, v: str) -> str:
        return aware_iso(v)

    @model_validator(mode="after")
    def _consistent(self) -> ExportMeta:
        users = set(self.Users)
        if len(users) != len(self.Users):
            raise ValueError("Users lists a user twice")
        seen: set[str] = set()
        for i, f in enumerate(self.Faces):
            if f.FaceId in seen:
                raise ValueError(f"Faces[{i}]: FaceId {f.FaceId} appears twice")
            seen.add(f.FaceId)
            if f.UserId is not None and f.UserId not in users:
                raise ValueError(f"Faces[{i}]: UserId {f.UserId!r} is not in Users")
        for u in self.Credentials:
            if u not in users:
                raise ValueError(f"Credentials: {u!r} is not in Users")
        return self

    @property
    def exported_at(self) -> datetime:
        return parse_timestamp(self.ExportedAt)


@dataclass(frozen=True)
class Export:
    """A checked export file: its meta, embeddings (row i is ``meta.Faces[i]``) and badges
    (normalised, one holder each)."""

    meta: ExportMeta
    embeddings: np.ndarray
    credentials: dict[str, str]


# -- export ----------------------------------------------------------------------------------
def export_faces(ctx: Context, collection_id: str, output: Path | str,
                 sign_key: Path | str | None = None) -> dict[str, Any]:
    """ExportFaces; with ``sign_key`` (the desk's Ed25519 key, ``facelink.fleet.signing``) the file
    carries a ``signature`` member over the ``meta`` bytes (which pin the embeddings' SHA-256)."""
    coll = ctx.collection(validate.collection_id(collection_id))
    # one state of the collection (one read transaction), stamped before it is read: a change made
    # meanwhile is wholly in the file or wholly after its ExportedAt, which imports order files by
    # (found in review: three reads at three moments, stamped after them, let a file stamped after a
    # DeleteUser + CreateUser of the same UserId still give that UserId the deleted person's face)
    exported_at = datetime.now(timezone.utc).isoformat()
    with ctx.store.read_transaction():
        matrix, rows = ctx.store.all_vectors(collection_id)
        users = [u for u, _ in ctx.store.list_users(collection_id, "", 1 << 30)]
        badges = ctx.store.credentials(collection_id)
    meta = {"Format": FORMAT, "FormatVersion": FORMAT_VERSION, "CollectionId": collection_id,
            "FaceModelVersion": coll.face_model_version,
            "ExportedAt": exported_at, "Users": users,
            "Credentials": badges,
            "Faces": [{"FaceId": r.face_id, "ImageId": r.image_id, "ExternalImageId": r.external_image_id,
                       "UserId": r.user_id, "BoundingBox": r.bounding_box, "Confidence": r.confidence}
                      for r in rows],
            "EmbeddingsSha256": hashlib.sha256(matrix.astype(np.float32).tobytes()).hexdigest()}
    output = Path(output)
    tmp = output.with_name(output.name + ".tmp")
    meta_bytes = json.dumps(meta).encode()
    extra: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {}
    if sign_key is not None:
        from facelink.fleet.signing import load_private, sign

        signature = sign(load_private(Path(sign_key)), meta_bytes)
        extra["signature"] = np.frombuffer(json.dumps(signature).encode(), dtype=np.uint8)
        out["SignedBy"] = signature["KeyId"]
    try:
        with open_private(tmp, "wb", group=ctx.store.group_access) as f:  # embeddings: 0600
            np.savez(f, embeddings=matrix.astype(np.float32),
                     meta=np.frombuffer(meta_bytes, dtype=np.uint8), **extra)
        tmp.replace(output)
    except OSError as exc:  # no copy of the embeddings is left behind half-written
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InvalidParameterException(f"cannot write the export to {output}: {exc.strerror or exc}") from None
    return {"Output": str(output), "FaceCount": len(rows), "UserCount": len(users),
            "FaceModelVersion": coll.face_model_version, **out}


# -- reading a file --------------------------------------------------------------------------
class _Refused(Exception):
    """Inside the zip reader: the file is not what it claims (becomes InvalidParameterException)."""


def _npy_header(f: IO[bytes], info: zipfile.ZipInfo) -> tuple[np.dtype, tuple[int, ...], int]:
    """dtype, shape and the header's length of a C-order ``.npy`` member (its data is not read)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER_BYTES)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER_BYTES)
    else:
        raise _Refused(f"{info.filename}: .npy version {version} is not supported")
    if fortran:
        raise _Refused(f"{info.filename}: Fortran-ordered array")
    return dtype, tuple(shape), f.tell()


def _member(z: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: str, max_bytes: int,
            rows: int | None = None) -> bytes:
    """The data bytes of a ``.npy`` member of ``dtype``: 1-D uint8 of at most ``max_bytes``, or
    (``rows`` given) exactly [rows, EMBEDDING_DIM]. The declared sizes are checked before any data
    is decompressed, and zipfile decompresses no more than the declared size."""
    if info.file_size > max_bytes + MAX_NPY_HEADER_BYTES:
        raise _Refused(f"{info.filename}: {info.file_size} bytes is too large (at most {max_bytes})")
    with z.open(info) as f:
        got, shape, header = _npy_header(f, info)
        if got != np.dtype(dtype):
            raise _Refused(f"{info.filename}: dtype {got.str}, expected {dtype}")
        if rows is None:
            if len(shape) != 1 or shape[0] > max_bytes:
                raise _Refused(f"{info.filename}: shape {shape}, expected at most ({max_bytes},)")
            size = shape[0]
        else:
            if shape != (rows, EMBEDDING_DIM):
                raise _Refused(f"{info.filename}: shape {shape} does not match the {rows} faces of meta "
                               f"(expected ({rows}, {EMBEDDING_DIM}))")
            size = rows * ROW_BYTES
        if info.file_size != header + size:
            raise _Refused(f"{info.filename}: {info.file_size} bytes, its header says {header + size}")
        data = f.read(size)
    if len(data) != size:
        raise _Refused(f"{info.filename}: truncated")
    return data


def _check_zip(z: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = z.infolist()
    names = [i.filename for i in infos]
    if len(names) != len(set(names)) or not set(names) <= set(MEMBERS):
        raise _Refused(f"members {[n[:40] for n in sorted(names)[:8]]}: expected embeddings.npy, meta.npy "
                       "and (signed) signature.npy, each once")
    members = {i.filename: i for i in infos}
    for name in ("embeddings.npy", "meta.npy"):
        if name not in members:
            raise _Refused(f"no {name}")
    return members


def _read_guarded(path: Path, step: Any) -> Any:
    """``step()`` on the opened zip; what a damaged or crafted zip raises becomes InvalidParameterException."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _Refused(f"{size} bytes is more than a FaceLink export can be ({MAX_FILE_BYTES})")
        with zipfile.ZipFile(path) as z:
            return step(z)
    except _Refused as exc:
        raise InvalidParameterException(f"{path} is not a FaceLink export file: {exc}") from None
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as exc:  # zipfile/numpy: damaged, encrypted, unknown compression
        raise InvalidParameterException(f"{path} is not a FaceLink export file: "
                                        f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _meta_error(path: Path, exc: ValidationError) -> InvalidParameterException:
    first = exc.errors(include_input=False)[0]
    def printable(text: str, limit: int) -> str:  # a crafted key or id stays one printable line
        return text[:limit].encode("unicode_escape").decode("ascii")

    where = printable(".".join(str(p) for p in first["loc"]), 120)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return InvalidParameterException(f"{path}: meta {where or '(top)'}: {printable(first['msg'], 200)}{more}; "
                                     "nothing imported")


def _credentials(meta: ExportMeta) -> dict[str, str]:
    """The file's badges, normalised (``access.wiegand``); one holder per badge."""
    from facelink.access.wiegand import Credential

    out: dict[str, str] = {}
    holders: dict[str, str] = {}
    for u, text in meta.Credentials.items():
        try:
            cred = str(Credential.parse(text))
        except InvalidParameterException as exc:
            raise InvalidParameterException(f"export: Credentials[{u!r}]: {exc.message}") from None
        if cred in holders:
            raise InvalidParameterException(f"export: credential {cred} is given to both "
                                            f"{holders[cred]!r} and {u!r}")
        holders[cred] = u
        out[u] = cred
    return out


def read_export(path: Path | str, trusted_keys: list[Path] | None = None, *,
                source_collection_id: str) -> Export:
    """Read and check an export (see the module docstring) of ``source_collection_id``; with
    ``trusted_keys`` it must be signed by one of them (InvalidSignatureException otherwise:
    unsigned, unknown key, or altered). A file of another collection is refused with
    InvalidSignatureException ``WRONG_COLLECTION``; every other fault of the file with
    InvalidParameterException. Nothing is written."""
    path = Path(path)

    def members(z: zipfile.ZipFile) -> tuple[bytes, bytes | None]:
        m = _check_zip(z)
        meta_bytes = _member(z, m["meta.npy"], "|u1", MAX_META_BYTES)
        sig = m.get("signature.npy")
        return meta_bytes, (_member(z, sig, "|u1", MAX_SIGNATURE_BYTES) if sig is not None and trusted_keys
                            else None)

    meta_bytes, signature_bytes = _read_guarded(path, members)
    if trusted_keys:
        from facelink.fleet.signing import load_trusted, verify

        trusted = load_trusted(list(trusted_keys))
        signature: Any = None
        if signature_bytes is not None:
            try:
                signature = json.loads(signature_bytes.decode())
            except (ValueError, RecursionError):
                raise InvalidSignatureException("BAD_SIGNATURE: the signature member is not JSON") from None
        verify(trusted, meta_bytes, signature)
    try:
        meta = ExportMeta.model_validate_json(meta_bytes)
    except ValidationError as exc:
        raise _meta_error(path, exc) from None
    if meta.CollectionId != source_collection_id:
        raise InvalidSignatureException(
            f"WRONG_COLLECTION: {path} is an export of {meta.CollectionId!r}, expected "
            f"{source_collection_id!r} (--source-collection-id names the collection a file may come from)")
    credentials = _credentials(meta)
    n = len(meta.Faces)
    data = _read_guarded(path, lambda z: _member(z, _check_zip(z)["embeddings.npy"], "<f4",
                                                 n * ROW_BYTES, rows=n))
    if hashlib.sha256(data).hexdigest() != meta.EmbeddingsSha256:
        raise InvalidParameterException(f"{path}: embeddings checksum mismatch (file damaged)")
    matrix = np.frombuffer(data, dtype="<f4").reshape(n, EMBEDDING_DIM).astype(np.float32)
    bad = not_embeddings(matrix)
    if len(bad):  # a longer row scores higher against everyone: refused before anything changes
        raise InvalidParameterException(
            f"{path}: {len(bad)} embeddings are not unit vectors (first: face "
            f"{meta.Faces[int(bad[0])].FaceId!r}); nothing imported")
    return Export(meta, matrix, credentials)


# -- import ----------------------------------------------------------------------------------
def _signed_key(source_collection_id: str, collection_id: str) -> str:
    """The meta row holding the newest signed ExportedAt imported from ``source`` into ``target``
    (':' cannot occur in a CollectionId)."""
    return f"signed_import_exported_at:{source_collection_id}:{collection_id}"


def _legacy_signed_key(collection_id: str) -> str:
    """Before source collections were named the record was kept per target only."""
    return f"signed_import_exported_at:{collection_id}"


def _refuse_rollback(c: Any, source_collection_id: str, collection_id: str, exported: datetime,
                     allow_older: bool) -> None:
    """A signed export older than the last one imported from the same source collection into this
    collection would undo every revocation made between the two: refused unless ``allow_older``.
    Until the first import from a source is recorded, the older per-target record applies."""
    if allow_older:
        return
    for key in (_signed_key(source_collection_id, collection_id), _legacy_signed_key(collection_id)):
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            continue
        if exported < datetime.fromisoformat(row[0]):
            raise ConflictException(
                f"export of {source_collection_id!r} made {exported.isoformat()} is older than the one "
                f"already imported into {collection_id!r} ({row[0]}): it would restore what was revoked "
                "since (--allow-older to import it anyway)")
        return


def import_faces(ctx: Context, collection_id: str, input_path: Path | str, *,
                 source_collection_id: str | None = None, replace: bool = False,
                 trusted_keys: list[Path] | None = None, allow_older: bool = False) -> dict[str, Any]:
    """Load an export of ``source_collection_id`` (default: ``collection_id``) into a collection
    (created if missing); refuses a file of another collection (InvalidSignatureException
    ``WRONG_COLLECTION``) and another FaceModelVersion (ConflictException).

    ``replace`` makes the collection an exact copy of the export — how a door follows the desk:
    faces and users no longer in the export are removed (a revoked badge stops opening the door
    as soon as the file is imported), changed user associations are applied. Without it the
    file's users, badges and new faces are added; faces already present are left as they are.

    With ``trusted_keys`` the file must be signed, and its signed ``ExportedAt`` must not be older
    than the last signed export of the same source imported into this collection (a replayed old
    file would bring back revoked users): ConflictException unless ``allow_older``.

    The file is checked whole first; the import is then one store transaction: a refusal or a
    failure at any point leaves the collection exactly as it was.
    """
    validate.collection_id(collection_id)
    source = collection_id if source_collection_id is None else validate.collection_id(source_collection_id)
    export = read_export(input_path, trusted_keys, source_collection_id=source)
    meta, store = export.meta, ctx.store
    with store.transaction() as c:  # the store's operations below join it: all or nothing
        coll = store.get_collection(collection_id)
        if coll is None:
            store.insert_collection(collection_id, meta.FaceModelVersion)
        elif coll.face_model_version != meta.FaceModelVersion:
            raise ConflictException(f"export holds FaceModelVersion {meta.FaceModelVersion}, collection "
                                    f"{collection_id!r} holds {coll.face_model_version}: not comparable")
        if trusted_keys:
            _refuse_rollback(c, source, collection_id, meta.exported_at, allow_older)
        out = _apply(store, collection_id, export, replace)
        if trusted_keys:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                      (_signed_key(source, collection_id), meta.exported_at.isoformat()))
    return {**out, "FaceModelVersion": meta.FaceModelVersion}


def _apply(store: Any, collection_id: str, export: Export, replace: bool) -> dict[str, Any]:
    """The import's writes, through the store's own operations, inside the caller's transaction."""
    meta = export.meta
    for u in meta.Users:
        if not store.user_exists(collection_id, u):
            store.insert_user(collection_id, u)
    present = {f.face_id: f for f in store.list_faces(collection_id, 0, 1 << 30)}
    wanted = {f.FaceId: f for f in meta.Faces}
    removed: list[str] = []
    updated, removed_users = 0, []
    if replace:
        removed = store.delete_faces(collection_id, [fid for fid in present if fid not in wanted])
        for fid, face in present.items():
            if fid in wanted and face.user_id != wanted[fid].UserId:
                store.set_user(collection_id, [face], wanted[fid].UserId)
                updated += 1
        keep = set(meta.Users)
        removed_users = [u for u, _ in store.list_users(collection_id, "", 1 << 30) if u not in keep]
        for u in removed_users:
            store.delete_user(collection_id, u)
    badges = export.credentials
    if replace:  # first clear what moved or went, so that a badge re-issued to someone else fits
        for u in meta.Users:
            current = store.user_credential(collection_id, u)
            if current is not None and badges.get(u) != current:
                store.set_user_credential(collection_id, u, None)
    for u, cred in badges.items():
        holder = store.user_by_credential(collection_id, cred)
        if holder is not None and holder != u:
            raise ConflictException(f"credential {cred} already belongs to user {holder!r}")
        if holder is None:
            store.set_user_credential(collection_id, u, cred)
    rows, skipped = [], 0
    for face, vec in zip(meta.Faces, export.embeddings):
        if face.FaceId in present:
            skipped += 1
            continue
        taken = store.query("SELECT 1 FROM faces WHERE face_id = ?", (face.FaceId,))
        rows.append({"face_id": str(uuid.uuid4()) if taken else face.FaceId,  # another collection's FaceId
                     "collection_id": collection_id, "image_id": face.ImageId,
                     "external_image_id": face.ExternalImageId, "user_id": face.UserId,
                     "image_sha256": "imported:" + face.ImageId, "bounding_box": face.BoundingBox,
                     "confidence": face.Confidence, "embedding": vec})
    if rows:
        store.insert_faces(rows)
    out: dict[str, Any] = {"ImportedFaces": len(rows), "SkippedFaces": skipped}
    if replace:
        out.update({"RemovedFaces": len(removed), "UpdatedFaces": updated, "RemovedUsers": removed_users})
    return out
