"""Private files and folders: the one place that decides the modes of what FaceLink writes.

Embeddings, decisions and audit records are biometric / personal data. Every file FaceLink
creates for them (the collection database and its -wal/-shm, the outbox, the audit log, exports)
is 0600 and every folder it creates for them 0700, whatever the umask. ``group=True``
(``store.group_access = true``) gives the owning group read access instead: 0640 / 0750.
Folders that already exist are left alone (they may be ``/var/lib`` or the operator's own);
files FaceLink owns are brought to the mode on every open, so an older 0644 file is tightened.
SQLite creates -wal and -shm with the mode of the database file.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

FILE_MODE, DIR_MODE = 0o600, 0o700
GROUP_FILE_MODE, GROUP_DIR_MODE = 0o640, 0o750


def file_mode(group: bool = False) -> int:
    return GROUP_FILE_MODE if group else FILE_MODE


def private_dir(path: Path | str, *, group: bool = False) -> Path:
    """Create ``path`` and any missing parents with the private folder mode."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    mode = GROUP_DIR_MODE if group else DIR_MODE
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue  # created concurrently: not ours to change
        os.chmod(d, mode)  # mkdir's mode is masked by the umask
    return path


def private_file(path: Path | str, *, group: bool = False) -> Path:
    """Make sure ``path`` exists (empty if new) with the private file mode, before anything
    (SQLite, numpy, a log writer) opens it.

    A file that exists already is never opened here, only chmod-ed by its path: closing *any*
    descriptor of a file drops every POSIX lock the process holds on it, SQLite's included
    (found in review, tenth session: a second connection to the desk database in the same process
    — the publisher's journal or snapshot connection — dropped the first one's locks, so a
    ``facelink`` command closing its own connection took itself for the last one and deleted the
    -wal and -shm files the publisher was still writing: its commits, revocations included, were
    lost). A new file is created exclusively, so no lock of this process can be on it."""
    path = Path(path)
    private_dir(path.parent, group=group)
    mode = file_mode(group)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    except FileExistsError:
        # only a regular file (through a symlink, as SQLite and open() follow it): a folder or a
        # device named by mistake (``audit.database = /var/lib/facelink``) is not chmod-ed 0600
        # (found in review: a folder was, and then nothing in it could be opened)
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a folder, not a file", str(path)) from None
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path)) from None
        os.chmod(path, mode)
        return path
    try:
        os.fchmod(fd, mode)  # the open's mode is masked by the umask
    finally:
        os.close(fd)
    return path


def open_private(path: Path | str, mode: str = "ab", *, group: bool = False):
    """``open()`` for a private file (append or write), created with the private mode."""
    private_file(path, group=group)
    return open(path, mode)


def write_durably(path: Path | str, data: bytes, *, replace: bool = True, mode: int = FILE_MODE) -> Path:
    """Write ``data`` as ``path`` whole or not at all, with ``mode`` (0600; a public key 0644),
    surviving a power cut: a new temporary file beside it (a fresh name, O_EXCL: a file or link
    left at a fixed name is never written through), fsynced, then renamed over ``path`` (``replace=False``: linked in, so an
    existing ``path`` is never overwritten: FileExistsError), then the folder fsynced so the new
    name survives too. The folder is created 0700 if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            tmp.replace(path)
        else:
            _link_new(tmp, path, data)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _link_new(tmp: Path, path: Path, data: bytes) -> None:
    """``tmp`` at ``path`` unless something is there (FileExistsError). A filesystem without hard
    links (FAT, e.g. a Pi's boot partition) gets ``path`` created exclusively and written instead:
    never over an existing file, but not whole-or-nothing across a power cut."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), os.stat(tmp).st_mode & 0o777)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
