"""ExportFaces / ImportFaces: the owner's embeddings in a portable, documented file.

Format (``.npz``, readable with numpy alone, no pickle):
  ``embeddings``  float32 [N, 128], L2-normalised, row i belongs to faces[i]
  ``meta``        uint8 bytes of a UTF-8 JSON object:
      {"Format": "facelink-faces", "FormatVersion": 1, "FaceModelVersion": ..., "CollectionId": ...,
       "ExportedAt": ISO-8601, "Users": [UserId, ...], "Credentials": {UserId: "H10301:18:12345"},
       "Faces": [{"FaceId", "ImageId", "ExternalImageId", "UserId", "BoundingBox", "Confidence"}],
       "EmbeddingsSha256": sha256 of the embeddings' bytes}
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facelink.config.paths import open_private
from facelink.errors import ConflictException, InvalidParameterException
from facelink.models.embedder import EMBEDDING_DIM, not_embeddings

from . import validate
from .context import Context

FORMAT = "facelink-faces"
FORMAT_VERSION = 1


def export_faces(ctx: Context, collection_id: str, output: Path | str,
                 sign_key: Path | str | None = None) -> dict[str, Any]:
    """ExportFaces; with ``sign_key`` (the desk's Ed25519 key, ``facelink.fleet.signing``) the file
    carries a ``signature`` member over the ``meta`` bytes (which pin the embeddings' SHA-256)."""
    coll = ctx.collection(validate.collection_id(collection_id))
    matrix, rows = ctx.store.all_vectors(collection_id)
    users = [u for u, _ in ctx.store.list_users(collection_id, "", 1 << 30)]
    meta = {"Format": FORMAT, "FormatVersion": FORMAT_VERSION, "CollectionId": collection_id,
            "FaceModelVersion": coll.face_model_version,
            "ExportedAt": datetime.now(timezone.utc).isoformat(), "Users": users,
            "Credentials": ctx.store.credentials(collection_id),
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
    with open_private(tmp, "wb", group=ctx.store.group_access) as f:  # embeddings: 0600
        np.savez(f, embeddings=matrix.astype(np.float32),
                 meta=np.frombuffer(meta_bytes, dtype=np.uint8), **extra)
    tmp.replace(output)
    return {"Output": str(output), "FaceCount": len(rows), "UserCount": len(users),
            "FaceModelVersion": coll.face_model_version, **out}


def read_export(path: Path | str, trusted_keys: list[Path] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Read and check an export; with ``trusted_keys`` it must be signed by one of them
    (InvalidSignatureException otherwise: unsigned, unknown key, or altered)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            meta_bytes = bytes(data["meta"])
            signature = json.loads(bytes(data["signature"]).decode()) if "signature" in data.files else None
            meta = json.loads(meta_bytes.decode())
            matrix = np.asarray(data["embeddings"], dtype=np.float32)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InvalidParameterException(f"{path} is not a FaceLink export file: {exc}") from None
    if trusted_keys:
        from facelink.fleet.signing import load_trusted, verify

        verify(load_trusted(list(trusted_keys)), meta_bytes, signature)
    if meta.get("Format") != FORMAT or meta.get("FormatVersion") != FORMAT_VERSION:
        raise InvalidParameterException(f"{path}: unsupported export format")
    if matrix.shape != (len(meta["Faces"]), EMBEDDING_DIM):
        raise InvalidParameterException(f"{path}: embeddings do not match the face list")
    if hashlib.sha256(matrix.tobytes()).hexdigest() != meta.get("EmbeddingsSha256"):
        raise InvalidParameterException(f"{path}: embeddings checksum mismatch (file damaged)")
    bad = not_embeddings(matrix)
    if len(bad):  # a longer row scores higher against everyone: refused before anything changes
        raise InvalidParameterException(
            f"{path}: {len(bad)} embeddings are not unit vectors (first: face "
            f"{meta['Faces'][int(bad[0])].get('FaceId')!r}); nothing imported")
    return meta, matrix


def _import_credentials(ctx: Context, collection_id: str, creds: dict[str, str], users: list[str],
                        replace: bool) -> None:
    """Badge credentials travel with their users (older exports have none: nothing changes)."""
    from facelink.access.wiegand import Credential

    if not isinstance(creds, dict):
        raise InvalidParameterException("export: Credentials must be an object")
    wanted = {validate.user_id(u): str(Credential.parse(c)) for u, c in creds.items()}
    if replace:  # first clear what moved or went, so that a badge re-issued to someone else fits
        for u in users:
            current = ctx.store.user_credential(collection_id, u)
            if current is not None and wanted.get(u) != current:
                ctx.store.set_user_credential(collection_id, u, None)
    for u, cred in wanted.items():
        if u not in users:
            raise InvalidParameterException(f"export: credential for {u!r}, who is not in Users")
        holder = ctx.store.user_by_credential(collection_id, cred)
        if holder is not None and holder != u:
            raise ConflictException(f"credential {cred} already belongs to user {holder!r}")
        ctx.store.set_user_credential(collection_id, u, cred)


def _exported_at(meta: dict[str, Any]) -> datetime:
    try:
        t = datetime.fromisoformat(str(meta.get("ExportedAt")))
    except ValueError:
        raise InvalidParameterException("export: ExportedAt is not an ISO-8601 time") from None
    if t.tzinfo is None:
        raise InvalidParameterException("export: ExportedAt has no time zone")
    return t


def _signed_key(collection_id: str) -> str:
    return f"signed_import_exported_at:{collection_id}"


def _refuse_rollback(ctx: Context, collection_id: str, meta: dict[str, Any], allow_older: bool) -> datetime:
    """A signed export older than the last one imported into this collection would undo every
    revocation made between the two: refused unless ``allow_older``."""
    exported = _exported_at(meta)
    rows = ctx.store.query("SELECT value FROM meta WHERE key = ?", (_signed_key(collection_id),))
    if rows and not allow_older and exported < datetime.fromisoformat(rows[0][0]):
        raise ConflictException(f"export made {exported.isoformat()} is older than the one already imported "
                                f"into {collection_id!r} ({rows[0][0]}): it would restore what was revoked "
                                "since (--allow-older to import it anyway)")
    return exported


def import_faces(ctx: Context, collection_id: str, input_path: Path | str, *,
                 replace: bool = False, trusted_keys: list[Path] | None = None,
                 allow_older: bool = False) -> dict[str, Any]:
    """Load an export into a collection (created if missing); refuses another FaceModelVersion.

    ``replace`` makes the collection an exact copy of the export — how a door follows the desk:
    faces and users no longer in the export are removed (a revoked badge stops opening the door
    as soon as the file is imported), changed user associations are applied.

    With ``trusted_keys`` the file must be signed, and its signed ``ExportedAt`` must not be older
    than the last signed export imported into this collection (a replayed old file would bring
    back revoked users): ConflictException unless ``allow_older``.
    """
    validate.collection_id(collection_id)
    meta, matrix = read_export(input_path, trusted_keys)
    exported_at = _refuse_rollback(ctx, collection_id, meta, allow_older) if trusted_keys else None
    version = meta["FaceModelVersion"]
    coll = ctx.store.get_collection(collection_id)
    if coll is None:
        coll = ctx.store.insert_collection(collection_id, version)
    elif coll.face_model_version != version:
        raise ConflictException(f"export holds FaceModelVersion {version}, collection "
                                f"{collection_id!r} holds {coll.face_model_version}: not comparable")
    exported_users = [validate.user_id(u) for u in meta.get("Users", [])]
    for u in exported_users:
        if not ctx.store.user_exists(collection_id, u):
            ctx.store.insert_user(collection_id, u)
    present = {f.face_id: f for f in ctx.store.list_faces(collection_id, 0, 1 << 30)}
    wanted = {f["FaceId"]: f for f in meta["Faces"]}
    removed, updated, removed_users = [], 0, []
    if replace:
        removed = ctx.store.delete_faces(collection_id, [fid for fid in present if fid not in wanted])
        for fid, face in present.items():
            new_user = wanted.get(fid, {}).get("UserId")
            if fid in wanted and face.user_id != new_user:
                ctx.store.set_user(collection_id, [face], new_user)
                updated += 1
        keep = set(exported_users)
        removed_users = [u for u, _ in ctx.store.list_users(collection_id, "", 1 << 30) if u not in keep]
        for u in removed_users:
            ctx.store.delete_user(collection_id, u)
    _import_credentials(ctx, collection_id, meta.get("Credentials") or {}, exported_users, replace)
    rows, skipped = [], 0
    for face, vec in zip(meta["Faces"], matrix):
        if face["FaceId"] in present:
            skipped += 1
            continue
        taken = ctx.store.query("SELECT 1 FROM faces WHERE face_id = ?", (face["FaceId"],))
        rows.append({"face_id": str(uuid.uuid4()) if taken else face["FaceId"],
                     "collection_id": collection_id, "image_id": face["ImageId"],
                     "external_image_id": face.get("ExternalImageId"), "user_id": face.get("UserId"),
                     "image_sha256": "imported:" + face["ImageId"], "bounding_box": face["BoundingBox"],
                     "confidence": face["Confidence"], "embedding": vec})
    if rows:
        ctx.store.insert_faces(rows)
    if exported_at is not None:
        with ctx.store.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_signed_key(collection_id),
                                                                      exported_at.isoformat()))
    out: dict[str, Any] = {"ImportedFaces": len(rows), "SkippedFaces": skipped, "FaceModelVersion": version}
    if replace:
        out.update({"RemovedFaces": len(removed), "UpdatedFaces": updated, "RemovedUsers": removed_users})
    return out
