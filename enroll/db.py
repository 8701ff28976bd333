"""Open the collection database: SQLite in WAL mode with the sqlite-vec extension loaded.

Python's stdlib ``sqlite3`` often cannot load extensions (this Python lacks
``enable_load_extension``), so the driver is chosen at run time, first that works:
stdlib sqlite3 (Raspberry Pi OS / Debian builds can), ``sqlean.py`` (a DB-API drop-in with
wheels for x86_64 and aarch64), ``pysqlite3`` (x86_64 wheels only). All three speak DB-API 2,
so the rest of the code is the same; see README "Why sqlean.py".
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from facelink.config.paths import private_file
from facelink.errors import StoreError

log = logging.getLogger(__name__)

DRIVERS = ("sqlite3", "sqlean", "pysqlite3.dbapi2")
BUSY_TIMEOUT_MS = 10_000


def _driver_can_load(mod: ModuleType) -> bool:
    try:
        conn = mod.connect(":memory:")
        ok = hasattr(conn, "enable_load_extension")
        conn.close()
        return ok
    except Exception:  # noqa: BLE001 - any failure means "not this driver"
        return False


def sqlite_driver() -> ModuleType:
    for name in DRIVERS:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if _driver_can_load(mod):
            return mod
    raise StoreError("no SQLite driver here can load extensions: pip install sqlean.py "
                     "(or pysqlite3-binary) so that sqlite-vec can be loaded")


def connect(path: Path | str, *, readonly: bool = False, group: bool = False, immutable: bool = False) -> Any:
    """A connection with sqlite-vec loaded, WAL with every commit synced (``synchronous = FULL``),
    foreign keys and a busy timeout. A database it
    creates is 0600 in a 0700 folder (0640/0750 with ``group``; config/paths.py), and so are its
    -wal and -shm files (SQLite gives them the database file's mode). ``immutable`` (read-only):
    SQLite creates no -wal/-shm and takes no lock; only for a database no one is writing."""
    try:
        import sqlite_vec
    except ImportError as exc:
        raise StoreError("sqlite-vec is not installed: pip install sqlite-vec") from exc
    mod = sqlite_driver()
    path = Path(path)
    try:
        if readonly:
            conn = mod.connect(f"file:{path}?mode=ro{'&immutable=1' if immutable else ''}", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        else:
            private_file(path, group=group)
            conn = mod.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: each commit is on disk before it returns (the WAL fsynced). NORMAL syncs only at
            # checkpoints, so a power cut could undo commits made up to the OS's writeback (~30 s)
            # before it: a revocation the desk had confirmed to its operator, or a journaled change
            # set already published to the doors (the desk would then sign another set under that
            # seq, which every door refuses as REPLAY). ~1 ms a commit here.
            conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except (mod.Error, OSError) as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    return conn
