"""A second connection to a database in the same process must not drop the first one's locks.
POSIX drops every lock a process holds on a file when it closes *any* descriptor of it; SQLite
keeps its own connections' descriptors apart for that, but FaceLink's ``private_file`` opened and
closed the database file before each connection. Found in review (tenth session): on the desk,
``facelink fleet publish`` (its store, then its journal's connection) lost its locks, and a
``facelink`` command at the desk closing its own connection took itself for the last one and
deleted the -wal and -shm files the publisher was still writing: what it committed after that,
revocations included, was gone. The real Store on a real file, the other side a real process."""

from __future__ import annotations

import subprocess
import sys

from facelink.enroll import faces
from facelink.enroll.context import Context
from facelink.enroll.store import Store

OPEN_AND_CLOSE = "import sys; from facelink.enroll.store import Store; Store(sys.argv[1]).close()"


def test_a_second_connection_keeps_the_first_ones_locks(tmp_path, engine):
    db = tmp_path / "facelink.db"
    first = Store(db)
    faces.create_collection(Context(first, lambda: engine), "before")
    Store(db).close()  # a second connection in this process, opened and closed (a journal, a snapshot)
    subprocess.run([sys.executable, "-c", OPEN_AND_CLOSE, str(db)], check=True, timeout=120)  # a CLI command
    assert (tmp_path / "facelink.db-wal").exists()  # still the first connection's
    faces.create_collection(Context(first, lambda: engine), "after")  # committed by the first connection
    first.close()
    with Store(db) as again:
        names = faces.list_collections(Context(again, lambda: engine))["CollectionIds"]
    assert names == ["after", "before"]
