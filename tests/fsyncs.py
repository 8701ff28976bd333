"""What a write made durable: every ``os.fsync`` while recording, as (kind, (dev, inode), probe())
— kind "file" or "folder", and what ``probe`` said at that moment (e.g. what the file's name
held), so a test can check the order: the data before the rename, the folder after it."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Synced = tuple[str, tuple[int, int], Any]


@contextmanager
def recording_fsyncs(probe: Callable[[], Any]) -> Iterator[list[Synced]]:
    synced: list[Synced] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append(("folder" if stat.S_ISDIR(st.st_mode) else "file", (st.st_dev, st.st_ino), probe()))
        real(fd)

    os.fsync = fsync
    try:
        yield synced
    finally:
        os.fsync = real
