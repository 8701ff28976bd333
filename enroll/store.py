"""The collection store: schema, migrations and row-level queries over SQLite + sqlite-vec.

Embeddings live twice, on purpose: in ``faces.embedding`` (a plain BLOB, fast to read back in
bulk for the door's in-memory index and for export) and in the ``face_vectors`` vec0 table
(cosine KNN for one-shot searches from the CLI). Both are written in one transaction, so a
kill -9 leaves them consistent. Every write also records its change through
``facelink.enroll.feed`` in the same transaction; followers (the door) read them back only
through ``feed.ChangeFeed``, never from these tables directly.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelink.errors import (
    ConflictException,
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    StoreError,
)
from facelink.models.embedder import EMBEDDING_DIM, not_embeddings

from . import feed
from .db import connect

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE collections(
            collection_id TEXT PRIMARY KEY,
            face_model_version TEXT NOT NULL,
            created_at REAL NOT NULL)""",
        """CREATE TABLE users(
            collection_id TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
            user_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (collection_id, user_id))""",
        """CREATE TABLE faces(
            id INTEGER PRIMARY KEY,
            face_id TEXT NOT NULL UNIQUE,
            collection_id TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
            image_id TEXT NOT NULL,
            external_image_id TEXT,
            user_id TEXT,
            image_sha256 TEXT NOT NULL,
            bounding_box TEXT NOT NULL,
            confidence REAL NOT NULL,
            embedding BLOB NOT NULL,
            thumbnail BLOB,
            indexed_at REAL NOT NULL)""",
        "CREATE INDEX faces_by_collection ON faces(collection_id, id)",
        "CREATE INDEX faces_by_user ON faces(collection_id, user_id)",
        "CREATE INDEX faces_by_image ON faces(collection_id, image_sha256, external_image_id)",
        f"""CREATE VIRTUAL TABLE face_vectors USING vec0(
            embedding float[{EMBEDDING_DIM}] distance_metric=cosine, collection_id text)""",
        """CREATE TABLE changes(
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            collection_id TEXT NOT NULL,
            face_row INTEGER NOT NULL,
            op TEXT NOT NULL CHECK (op IN ('add', 'del', 'user', 'reset')))""",
    ],
    2: [  # a user's badge (Wiegand credential, "H10301:18:12345"): one holder per collection
        "ALTER TABLE users ADD COLUMN credential TEXT",
        "CREATE UNIQUE INDEX users_by_credential ON users(collection_id, credential) "
        "WHERE credential IS NOT NULL",
    ],
    3: [  # ClientRequestToken idempotency (CreateUser, DeleteUser, AssociateFaces, DisassociateFaces)
        """CREATE TABLE request_tokens(
            operation TEXT NOT NULL,
            token TEXT NOT NULL,
            params_sha256 TEXT NOT NULL,
            response TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (operation, token))""",
    ],
    4: [  # the feed names what fleet sync sends: a face change keeps its FaceId (a deleted face
        # can still be named), user changes (created, deleted, credential) get ops of their own
        """CREATE TABLE changes_v4(
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            collection_id TEXT NOT NULL,
            face_row INTEGER NOT NULL,
            op TEXT NOT NULL CHECK (op IN ('add', 'del', 'user', 'user_put', 'user_del', 'reset')),
            face_id TEXT,
            user_id TEXT)""",
        "INSERT INTO changes_v4(seq, collection_id, face_row, op, face_id) SELECT c.seq, "
        "c.collection_id, c.face_row, c.op, f.face_id FROM changes c LEFT JOIN faces f ON f.id = c.face_row",
        "DROP TABLE changes",
        "ALTER TABLE changes_v4 RENAME TO changes",
        "CREATE INDEX changes_by_collection ON changes(collection_id, seq)",
    ],
    5: [  # the photos whose faces were taken from a user (DisassociateFaces, DeleteUser), kept when
        # the faces are deleted: a bulk re-run of an old folder or roster must not give them back
        # (enroll/bulk.py); cleared when a face of that photo is associated with that user again
        """CREATE TABLE revoked_images(
            collection_id TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
            image_sha256 TEXT NOT NULL,
            user_id TEXT NOT NULL,
            revoked_at REAL NOT NULL,
            PRIMARY KEY (collection_id, image_sha256, user_id))""",
    ],
}

REQUEST_TOKEN_TTL_S = 24 * 3600
NEAREST_USERS_VECTORS = 500  # probe vectors per statement: SQLite builds before 3.32 bind at most 999
# Store.nearest_users' statement ({probes}: "(?), (?), ..."). CROSS JOIN keeps faces outside, so each
# associated row is read once, in faces_by_user order: one user's group at a time, no GROUP BY b-tree
NEAREST_USERS_SQL = (
    "WITH probe(v) AS (VALUES {probes}) "
    "SELECT f.user_id, min(vec_distance_cosine(f.embedding, probe.v)) AS d FROM faces f CROSS JOIN probe "
    "WHERE f.collection_id = ? AND f.user_id IS NOT NULL AND f.user_id IS NOT ? "
    "GROUP BY f.user_id ORDER BY d, f.user_id LIMIT ?")

FACE_COLUMNS = ("id, face_id, collection_id, image_id, external_image_id, user_id, image_sha256, "
                "bounding_box, confidence, embedding, indexed_at")


@dataclass(frozen=True)
class Collection:
    collection_id: str
    face_model_version: str
    created_at: float


@dataclass(frozen=True)
class FaceRow:
    id: int
    face_id: str
    collection_id: str
    image_id: str
    external_image_id: str | None
    user_id: str | None
    image_sha256: str
    bounding_box: dict[str, float]
    confidence: float
    embedding: np.ndarray
    indexed_at: float

    @classmethod
    def from_db(cls, row: tuple) -> FaceRow:
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]),
                   row[8], np.frombuffer(row[9], dtype=np.float32), row[10])


@dataclass(frozen=True)
class FaceColumns:
    """A collection's faces as columns, ordered by row id (a follower's bulk read: no per-row
    objects but the id strings)."""

    ids: np.ndarray  # (n,) int64 row ids
    face_ids: list[str]
    external_image_ids: list[str | None]
    user_ids: list[str | None]
    embeddings: np.ndarray  # (n, EMBEDDING_DIM) float32


class _ColumnsBuilder:
    """The chunks of :meth:`Store.collection_face_columns` decoded in order into one set of
    columns (the float32 matrix allocated once for the collection's row count: with
    ``users_only`` the rows past the end are never written, so never resident)."""

    def __init__(self, collection_id: str, rows: int) -> None:
        self.collection_id = collection_id
        self.embeddings = np.empty((rows, EMBEDDING_DIM), dtype=np.float32)
        self.at = 0
        self.ids: list[np.ndarray] = []
        self.face_ids: list[str] = []
        self.user_ids: list[str | None] = []
        self.external_image_ids: list[str | None] = []

    def add(self, after: int, n: int, bad: int, blob: bytes, ids: str, face_ids: str,
            user_ids: str, external_image_ids: str) -> None:
        cols = (face_ids.split("\n"), user_ids.split("\n"), external_image_ids.split("\n"))
        if bad or len(blob) != n * EMBEDDING_DIM * 4 or any(len(c) != n for c in cols):
            raise StoreError(f"collection {self.collection_id!r}: malformed face rows after row {after}")
        if self.at + n > len(self.embeddings):  # rows added since the count (no read transaction)
            self.embeddings = np.concatenate([self.embeddings[:self.at],
                                              np.empty((n, EMBEDDING_DIM), np.float32)])
        self.embeddings[self.at:self.at + n] = np.frombuffer(blob, dtype=np.float32).reshape(n, EMBEDDING_DIM)
        self.at += n
        self.ids.append(np.fromstring(ids, dtype=np.int64, sep=","))
        self.face_ids += cols[0]
        self.user_ids += [u or None for u in cols[1]]
        self.external_image_ids += [e or None for e in cols[2]]

    def finished(self) -> FaceColumns:
        row_ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
        embeddings = self.embeddings[:self.at]
        if len(row_ids) != len(embeddings) or np.any(np.diff(row_ids) <= 0):
            raise StoreError(f"collection {self.collection_id!r}: face row ids out of order")
        return FaceColumns(row_ids, self.face_ids, self.external_image_ids, self.user_ids, embeddings)


class Store:
    """Row-level access to one database file. The Rekognition-style operations built on it live
    in ``facelink.enroll.faces``, ``.users``, ``.search`` and ``.exchange``."""

    def __init__(self, path: Path | str, *, readonly: bool = False,
                 changes_keep: int = feed.KEEP_CHANGES, group_access: bool = False) -> None:
        self.path = Path(path)
        self.changes_keep = changes_keep
        self.group_access = group_access  # store.group_access: file modes (config/paths.py)
        self._conn = connect(self.path, readonly=readonly, group=group_access)
        self._depth = 0  # transactions open on this connection by ``_tx_thread`` (inner ones join)
        self._tx_thread: int | None = None
        if not readonly:
            self._migrate()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.transaction():
            has_meta = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            version = 0
            if has_meta:
                row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {version}; this FaceLink "
                                 f"knows up to {SCHEMA_VERSION}: upgrade FaceLink")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for sql in MIGRATIONS[v]:
                    self._conn.execute(sql)
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(v),))

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """BEGIN IMMEDIATE ... COMMIT; any SQLite error becomes a StoreError (disk full, locked).
        Inside another transaction of this store it joins that one: the store's own operations
        compose into one all-or-nothing change (an import), committed or rolled back by the
        outermost. (Only on the thread that opened it: another thread's transaction on this
        connection fails as it always did.)"""
        conn = self._conn
        if self._depth and self._tx_thread == threading.get_ident():
            self._depth += 1
            try:
                yield conn
            finally:
                self._depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # noqa: BLE001 - driver-specific error classes
            raise StoreError(f"database {self.path} is busy or unwritable: {exc}") from exc
        self._depth, self._tx_thread = 1, threading.get_ident()
        try:
            yield conn
            self._depth = 0
            conn.execute("COMMIT")
        except BaseException as exc:
            self._depth = 0
            if conn.in_transaction:  # SQLite may already have rolled back (e.g. SQLITE_FULL)
                conn.execute("ROLLBACK")
            if isinstance(exc, Exception) and type(exc).__module__.split(".")[0] in (
                    "sqlite3", "sqlean", "pysqlite3"):
                name = getattr(exc, "sqlite_errorname", "")
                hint = " (the disk or database is full)" if name == "SQLITE_FULL" else ""
                raise StoreError(f"database write failed{hint}: {exc}") from exc
            raise

    @contextmanager
    def read_transaction(self) -> Iterator[None]:
        """Several reads from one consistent snapshot (WAL); a failure to start is a StoreError."""
        try:
            self._conn.execute("BEGIN")
        except Exception as exc:  # noqa: BLE001 - driver-specific error classes
            raise StoreError(f"database read failed: {exc}") from exc
        try:
            yield
        finally:
            try:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")  # read-only: nothing to keep
            except Exception:  # noqa: BLE001 - the read's own error (if any) is the one to report
                pass

    def _changed(self, conn: Any, collection_id: str, faces: list[tuple[int, str | None]], op: str) -> None:
        feed.record(conn, collection_id, faces, op, keep=self.changes_keep)

    def _users_changed(self, conn: Any, collection_id: str, user_ids: list[str], op: str) -> None:
        feed.record_users(conn, collection_id, user_ids, op, keep=self.changes_keep)

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except Exception as exc:  # noqa: BLE001 - driver-specific error classes
            raise StoreError(f"database read failed: {exc}") from exc

    def data_version(self) -> int:
        return int(self.query("PRAGMA data_version")[0][0])

    # -- collections -----------------------------------------------------------------------
    def get_collection(self, collection_id: str) -> Collection | None:
        rows = self.query("SELECT collection_id, face_model_version, created_at FROM collections "
                          "WHERE collection_id = ?", (collection_id,))
        return Collection(*rows[0]) if rows else None

    def insert_collection(self, collection_id: str, model_version: str) -> Collection:
        now = time.time()
        with self.transaction() as c:  # another connection may have created it since the caller looked
            if not c.execute("INSERT INTO collections VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                             (collection_id, model_version, now)).rowcount:
                raise ResourceAlreadyExistsException(f"collection {collection_id!r} already exists")
        return Collection(collection_id, model_version, now)

    def delete_collection(self, collection_id: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM face_vectors WHERE rowid IN "
                      "(SELECT id FROM faces WHERE collection_id = ?)", (collection_id,))
            c.execute("DELETE FROM faces WHERE collection_id = ?", (collection_id,))
            c.execute("DELETE FROM users WHERE collection_id = ?", (collection_id,))
            c.execute("DELETE FROM collections WHERE collection_id = ?", (collection_id,))
            self._changed(c, collection_id, [(0, None)], "reset")

    def list_collections(self, after: str, limit: int) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT collection_id FROM collections WHERE collection_id > ? "
            "ORDER BY collection_id LIMIT ?", (after, limit))]

    def count(self, table: str, collection_id: str) -> int:
        assert table in ("faces", "users")
        return int(self.query(f"SELECT count(*) FROM {table} WHERE collection_id = ?",
                              (collection_id,))[0][0])

    # -- faces -----------------------------------------------------------------------------
    def insert_faces(self, rows: list[dict[str, Any]], thumbnails: list[bytes | None] | None = None,
                     require_user: str | None = None, unless_taken: bool = False) -> list[int]:
        """Insert faces (dicts with FaceRow's fields minus id) in one transaction; with
        ``require_user`` nothing is inserted unless that user exists (checked inside it); with
        ``unless_taken`` nothing is inserted if a photo associated here was taken from a user
        (:meth:`_refuse_taken`). An embedding that is not a unit vector of EMBEDDING_DIM values is
        refused (nothing inserted)."""
        vectors = [np.asarray(r["embedding"], dtype=np.float32) for r in rows]
        if any(v.shape != (EMBEDDING_DIM,) for v in vectors) or (
                vectors and len(not_embeddings(np.stack(vectors)))):
            raise InvalidParameterException(f"an embedding is not a unit vector of {EMBEDDING_DIM} "
                                            "finite values: nothing inserted")
        ids = []
        with self.transaction() as c:
            if require_user is not None and rows and not c.execute(
                    "SELECT 1 FROM users WHERE collection_id = ? AND user_id = ?",
                    (rows[0]["collection_id"], require_user)).fetchone():
                raise ResourceNotFoundException(f"user {require_user!r} does not exist")
            if unless_taken:
                for r in rows:
                    if r.get("user_id") is not None:
                        self._refuse_taken(c, r["collection_id"], r["image_sha256"], r["user_id"])
            for i, r in enumerate(rows):
                emb = vectors[i].tobytes()
                cur = c.execute(
                    "INSERT INTO faces(face_id, collection_id, image_id, external_image_id, user_id, "
                    "image_sha256, bounding_box, confidence, embedding, thumbnail, indexed_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (r["face_id"], r["collection_id"], r["image_id"], r.get("external_image_id"),
                     r.get("user_id"), r["image_sha256"], json.dumps(r["bounding_box"]),
                     float(r["confidence"]), emb, thumbnails[i] if thumbnails else None,
                     float(r.get("indexed_at", time.time()))))
                row_id = int(cur.lastrowid)
                c.execute("INSERT INTO face_vectors(rowid, embedding, collection_id) VALUES (?,?,?)",
                          (row_id, emb, r["collection_id"]))
                ids.append(row_id)
            for coll in {r["collection_id"] for r in rows}:
                self._changed(c, coll, [(i, r["face_id"]) for i, r in zip(ids, rows)
                                        if r["collection_id"] == coll], "add")
            for r in rows:  # indexed with a user on purpose (IndexFaces --user-id, an import)
                if r.get("user_id") is not None:
                    self._given_back(c, r["collection_id"], r["image_sha256"], r["user_id"])
        return ids

    def faces_by_image(self, collection_id: str, image_sha256: str,
                       external_image_id: str | None) -> list[FaceRow]:
        return [FaceRow.from_db(r) for r in self.query(
            f"SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = ? AND image_sha256 = ? "
            "AND external_image_id IS ? ORDER BY id", (collection_id, image_sha256, external_image_id))]

    def get_faces(self, collection_id: str, face_ids: list[str]) -> list[FaceRow]:
        if not face_ids:
            return []
        marks = ",".join("?" * len(face_ids))
        return [FaceRow.from_db(r) for r in self.query(
            f"SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = ? AND face_id IN ({marks}) "
            "ORDER BY id", [collection_id, *face_ids])]

    def faces_by_rows(self, row_ids: list[int]) -> list[FaceRow]:
        out: list[FaceRow] = []
        for start in range(0, len(row_ids), 500):
            chunk = row_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out += [FaceRow.from_db(r) for r in self.query(
                f"SELECT {FACE_COLUMNS} FROM faces WHERE id IN ({marks}) ORDER BY id", chunk)]
        return out

    def list_faces(self, collection_id: str, after_row: int, limit: int,
                   user_id: str | None = None, face_ids: list[str] | None = None) -> list[FaceRow]:
        sql = f"SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = ? AND id > ?"
        params: list[Any] = [collection_id, after_row]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        if face_ids:
            sql += f" AND face_id IN ({','.join('?' * len(face_ids))})"
            params += face_ids
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [FaceRow.from_db(r) for r in self.query(sql, params)]

    def delete_faces(self, collection_id: str, face_ids: list[str]) -> list[str]:
        found = self.get_faces(collection_id, face_ids)
        with self.transaction() as c:
            for f in found:
                # a face deleted while still associated (an import --replace removes it before its
                # user) is taken from that user as much as by DisassociateFaces: remembered (found in
                # review: DeleteUser found no face left to remember, and a bulk re-run gave it back)
                c.execute("INSERT OR REPLACE INTO revoked_images SELECT collection_id, image_sha256, user_id, ? "
                          "FROM faces WHERE id = ? AND user_id IS NOT NULL", (time.time(), f.id))
                c.execute("DELETE FROM face_vectors WHERE rowid = ?", (f.id,))
                c.execute("DELETE FROM faces WHERE id = ?", (f.id,))
            self._changed(c, collection_id, [(f.id, f.face_id) for f in found], "del")
        return [f.face_id for f in found]

    def knn(self, collection_id: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """sqlite-vec cosine KNN within a collection: (row id, cosine distance)."""
        return [(int(r[0]), float(r[1])) for r in self.query(
            "SELECT rowid, distance FROM face_vectors WHERE embedding MATCH ? AND k = ? "
            "AND collection_id = ? ORDER BY distance",
            (np.asarray(vector, dtype=np.float32).tobytes(), int(k), collection_id))]

    def nearest_faces_exact(self, collection_id: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` faces nearest ``vector``: (row id, cosine distance), closest first. Exact,
        one pass over the collection with sqlite-vec's ``vec_distance_cosine`` (bit for bit the
        distance of :meth:`knn`), SQLite keeping ``k`` rows for the ORDER BY: for a ``k`` beyond
        what one vec0 KNN returns (4,096)."""
        return [(int(r), float(d)) for r, d in self.query(
            "SELECT id, vec_distance_cosine(embedding, ?) AS distance FROM faces WHERE collection_id = ? "
            "ORDER BY distance, id LIMIT ?", (np.asarray(vector, dtype=np.float32).tobytes(), collection_id, int(k)))]

    def nearest_users(self, collection_id: str, vectors: list[np.ndarray], limit: int,
                      exclude_user: str | None = None) -> list[tuple[str, float]]:
        """Users ranked by their face nearest to any of ``vectors``: (user id, cosine distance),
        closest first (ties by user id), at most ``limit``. Exact, over the faces associated with
        a user and only those (an unassociated face is never compared, so no number of them can
        crowd a user out, as they could a KNN's k nearest): sqlite-vec's ``vec_distance_cosine``
        on ``faces.embedding`` (bit for bit the distance its vec0 KNN gives), one pass over
        those rows per ``NEAREST_USERS_VECTORS`` vectors, walking the faces_by_user index so
        that SQLite aggregates one user at a time and keeps ``limit`` rows for the ORDER BY."""
        best: dict[str, float] = {}
        for start in range(0, len(vectors), NEAREST_USERS_VECTORS):
            chunk = vectors[start:start + NEAREST_USERS_VECTORS]
            for user_id, distance in self.query(
                    NEAREST_USERS_SQL.format(probes=", ".join(["(?)"] * len(chunk))),
                    [*(np.asarray(v, dtype=np.float32).tobytes() for v in chunk),
                     collection_id, exclude_user, int(limit)]):
                best[user_id] = min(best.get(user_id, float(distance)), float(distance))
        # each statement's first ``limit`` hold every user of the overall first ``limit``
        return sorted(best.items(), key=lambda t: (t[1], t[0]))[:limit]

    def collection_faces(self, collection_id: str) -> list[FaceRow]:
        return [FaceRow.from_db(r) for r in self.query(
            f"SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = ? ORDER BY id", (collection_id,))]

    def collection_face_columns(self, collection_id: str, *, users_only: bool = False,
                                chunk: int = 65_536) -> FaceColumns:
        """The collection's faces (``users_only``: those associated with a user) as columns, read
        in chunks of ``chunk`` rows: each chunk is one row of SQL aggregates (the embeddings
        concatenated into one BLOB), so 1M faces cost ~16 rows, not 1M tuples. Call it inside
        ``read_transaction()`` for one consistent snapshot. A malformed embedding (not
        EMBEDDING_DIM float32 values) or id (a separator inside) is a StoreError."""
        where = "collection_id = ? AND id > ?" + (" AND user_id IS NOT NULL" if users_only else "")
        sql = (f"SELECT count(*), max(id), sum(length(embedding) IS NOT {EMBEDDING_DIM * 4}), "
               "CAST(group_concat(embedding, '') AS BLOB), group_concat(id), "
               "group_concat(face_id, char(10)), group_concat(coalesce(user_id, ''), char(10)), "
               "group_concat(coalesce(external_image_id, ''), char(10)) "
               f"FROM (SELECT id, face_id, user_id, external_image_id, embedding FROM faces "
               f"WHERE {where} ORDER BY id LIMIT ?)")
        (mine, top_row), = self.query("SELECT (SELECT count(*) FROM faces WHERE collection_id = ?), "
                                      "(SELECT max(id) FROM faces)", (collection_id,))
        if mine and mine * 2 >= (top_row or 0):  # most of the table: walk it in row order
            sql = sql.replace("FROM faces WHERE", "FROM faces NOT INDEXED WHERE")
        columns = _ColumnsBuilder(collection_id, mine)
        # SQLite runs the next chunk (the GIL released) while a worker decodes this one; at most
        # one chunk waits, so a failure stops the read within a chunk and memory stays bounded
        worker = ThreadPoolExecutor(1, thread_name_prefix="face-columns")
        try:
            pending: deque[Future[None]] = deque()
            last = 0
            while True:
                n, top, *chunk_columns = self.query(sql, (collection_id, last, chunk))[0]
                if not n:
                    break
                if len(pending) == 2:
                    pending.popleft().result()  # a malformed chunk raises here
                pending.append(worker.submit(columns.add, last, n, *chunk_columns))
                last = int(top)
            while pending:
                pending.popleft().result()
        finally:
            worker.shutdown(wait=True, cancel_futures=True)
        return columns.finished()

    def all_vectors(self, collection_id: str) -> tuple[np.ndarray, list[FaceRow]]:
        rows = self.collection_faces(collection_id)
        matrix = (np.stack([r.embedding for r in rows]) if rows
                  else np.zeros((0, EMBEDDING_DIM), dtype=np.float32))
        return matrix, rows

    # -- users -----------------------------------------------------------------------------
    def user_exists(self, collection_id: str, user_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM users WHERE collection_id = ? AND user_id = ?",
                               (collection_id, user_id)))

    def insert_user(self, collection_id: str, user_id: str) -> None:
        with self.transaction() as c:  # another connection may have created it since the caller looked
            if not c.execute("INSERT INTO users(collection_id, user_id, created_at) VALUES (?, ?, ?) "
                             "ON CONFLICT DO NOTHING", (collection_id, user_id, time.time())).rowcount:
                raise ConflictException(f"user {user_id!r} already exists in {collection_id!r}")
            self._users_changed(c, collection_id, [user_id], "user_put")

    def delete_user(self, collection_id: str, user_id: str) -> None:
        with self.transaction() as c:
            rows = c.execute("SELECT id, face_id FROM faces WHERE collection_id = ? AND user_id = ?",
                             (collection_id, user_id)).fetchall()
            c.execute("INSERT OR REPLACE INTO revoked_images SELECT DISTINCT collection_id, image_sha256, "
                      "user_id, ? FROM faces WHERE collection_id = ? AND user_id = ?",
                      (time.time(), collection_id, user_id))
            c.execute("UPDATE faces SET user_id = NULL WHERE collection_id = ? AND user_id = ?",
                      (collection_id, user_id))
            c.execute("DELETE FROM users WHERE collection_id = ? AND user_id = ?", (collection_id, user_id))
            self._changed(c, collection_id, [(int(r), fid) for r, fid in rows], "user")
            self._users_changed(c, collection_id, [user_id], "user_del")

    def user_credential(self, collection_id: str, user_id: str) -> str | None:
        rows = self.query("SELECT credential FROM users WHERE collection_id = ? AND user_id = ?",
                          (collection_id, user_id))
        return rows[0][0] if rows else None

    def user_by_credential(self, collection_id: str, credential: str) -> str | None:
        rows = self.query("SELECT user_id FROM users WHERE collection_id = ? AND credential = ?",
                          (collection_id, credential))
        return rows[0][0] if rows else None

    def credentials(self, collection_id: str) -> dict[str, str]:
        return dict(self.query("SELECT user_id, credential FROM users WHERE collection_id = ? "
                               "AND credential IS NOT NULL ORDER BY user_id", (collection_id,)))

    def set_user_credential(self, collection_id: str, user_id: str, credential: str | None) -> None:
        with self.transaction() as c:
            if c.execute("UPDATE users SET credential = ? WHERE collection_id = ? AND user_id = ?",
                         (credential, collection_id, user_id)).rowcount:
                self._users_changed(c, collection_id, [user_id], "user_put")

    def list_users(self, collection_id: str, after: str, limit: int) -> list[tuple[str, int]]:
        return [(r[0], int(r[1])) for r in self.query(
            "SELECT u.user_id, (SELECT count(*) FROM faces f WHERE f.collection_id = u.collection_id "
            "AND f.user_id = u.user_id) FROM users u WHERE u.collection_id = ? AND u.user_id > ? "
            "ORDER BY u.user_id LIMIT ?", (collection_id, after, limit))]

    def set_user(self, collection_id: str, rows: list[FaceRow], user_id: str | None, *,
                 unless_taken: bool = False) -> list[FaceRow]:
        """Associate ``rows`` with ``user_id`` (None: disassociate them). Checked inside the
        write transaction, so that another connection's write made since the caller read the
        rows wins: ``user_id`` must still exist (ResourceNotFoundException, nothing changed), and
        each face changes only while it is still associated as its ``FaceRow.user_id`` says (a
        face deleted or taken by another user meanwhile is left alone). With ``unless_taken`` (a
        bulk run) nothing changes if one of the photos was taken from a user (:meth:`_refuse_taken`).
        The rows changed."""
        with self.transaction() as c:
            if user_id is not None and not c.execute(
                    "SELECT 1 FROM users WHERE collection_id = ? AND user_id = ?", (collection_id, user_id)).fetchone():
                raise ResourceNotFoundException(f"user {user_id!r} does not exist in {collection_id!r}")
            if unless_taken and user_id is not None:
                for f in rows:
                    self._refuse_taken(c, collection_id, f.image_sha256, user_id)
            done = [f for f in rows if c.execute(
                "UPDATE faces SET user_id = ? WHERE id = ? AND collection_id = ? AND user_id IS ?",
                (user_id, f.id, collection_id, f.user_id)).rowcount]
            for f in done:  # the photos taken from a user, or given back to one on purpose
                if f.user_id is not None and f.user_id != user_id:  # also moved to another (an import)
                    c.execute("INSERT OR REPLACE INTO revoked_images VALUES (?, ?, ?, ?)",
                              (collection_id, f.image_sha256, f.user_id, time.time()))
                if user_id is not None:
                    self._given_back(c, collection_id, f.image_sha256, user_id)
            if done:
                self._changed(c, collection_id, [(f.id, f.face_id) for f in done], "user")
        return done

    def revoked_image(self, collection_id: str, image_sha256: str) -> list[str]:
        """The users a face of this photo was taken from (DisassociateFaces, DeleteUser; also when
        those faces were deleted since) and not given back to since, oldest first."""
        return [r[0] for r in self.query(
            "SELECT user_id FROM revoked_images WHERE collection_id = ? AND image_sha256 = ? "
            "ORDER BY revoked_at, user_id", (collection_id, image_sha256))]

    def image_held_by(self, collection_id: str, image_sha256: str, user_id: str) -> bool:
        """Whether a face of this photo (under any ExternalImageId) is associated with ``user_id``."""
        return bool(self.query("SELECT 1 FROM faces WHERE collection_id = ? AND image_sha256 = ? AND user_id = ? "
                               "LIMIT 1", (collection_id, image_sha256, user_id)))

    @staticmethod
    def _refuse_taken(c: Any, collection_id: str, image_sha256: str, user_id: str) -> None:
        """ConflictException if a face of this photo was taken from a user (revoked_images) and
        ``user_id`` holds none of its faces: a bulk run's check (enroll/bulk.py), made again inside
        the write, so that a revocation committed by another connection since the run looked wins
        (found in review: the run associated the face again and cleared the record)."""
        taken = c.execute(
            "SELECT user_id FROM revoked_images WHERE collection_id = ? AND image_sha256 = ? AND NOT EXISTS "
            "(SELECT 1 FROM faces WHERE collection_id = ? AND image_sha256 = ? AND user_id = ?) "
            "ORDER BY revoked_at, user_id LIMIT 1",
            (collection_id, image_sha256, collection_id, image_sha256, user_id)).fetchone()
        if taken:
            raise ConflictException(
                f"this photo's face was taken from user {taken[0]!r} (DeleteUser or DisassociateFaces): a bulk "
                "run does not give it back; to do so on purpose, associate-faces (or index-faces --user-id)")

    @staticmethod
    def _given_back(c: Any, collection_id: str, image_sha256: str, user_id: str) -> None:
        """A face of this photo was associated with ``user_id`` on purpose: no longer revoked."""
        c.execute("DELETE FROM revoked_images WHERE collection_id = ? AND image_sha256 = ? AND user_id = ?",
                  (collection_id, image_sha256, user_id))

    # -- idempotency tokens ----------------------------------------------------------------
    def request_token(self, operation: str, token: str) -> tuple[str, str] | None:
        """(params digest, response JSON) recorded for a ClientRequestToken, if still valid."""
        rows = self.query("SELECT params_sha256, response FROM request_tokens WHERE operation = ? "
                          "AND token = ? AND created_at > ?",
                          (operation, token, time.time() - REQUEST_TOKEN_TTL_S))
        return (rows[0][0], rows[0][1]) if rows else None

    def record_request_token(self, operation: str, token: str, params_sha256: str, response: str) -> None:
        now = time.time()
        with self.transaction() as c:
            c.execute("DELETE FROM request_tokens WHERE created_at <= ?", (now - REQUEST_TOKEN_TTL_S,))
            c.execute("INSERT OR REPLACE INTO request_tokens VALUES (?, ?, ?, ?, ?)",
                      (operation, token, params_sha256, response, now))

