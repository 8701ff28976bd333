"""The desk's signing key is written so that a power cut keeps it (found in review: it was
neither fsynced nor was its folder): every door trusts only its public key, so a desk that came
back with a truncated or missing key could sign nothing the doors accept. Written whole (a
temporary file fsynced, then linked in: never over an existing key), its folder fsynced after,
0600 in a 0700 folder."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from facelink.errors import ConfigError
from facelink.fleet.signing import generate_keypair, load_private

from ..fsyncs import recording_fsyncs


def identity(path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def test_the_desk_key_and_its_name_are_on_disk_before_generate_returns(tmp_path):
    private, public = tmp_path / "keys" / "desk.key", tmp_path / "keys" / "desk.pub"
    with recording_fsyncs(private.exists) as synced:  # (kind, (dev, inode), the key at its name then)
        generate_keypair(private, public)

    st, folder = private.stat(), private.parent.stat()
    key_file, key_folder = (st.st_dev, st.st_ino), (folder.st_dev, folder.st_ino)
    assert ("file", key_file, False) in synced, f"the key's data was not fsynced before it got its name: {synced}"
    assert ("folder", key_folder, True) in synced, f"the key's folder was not fsynced once it had its name: {synced}"
    assert synced.index(("file", key_file, False)) < synced.index(("folder", key_folder, True))
    load_private(private)  # whole, and private
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_IMODE(folder.st_mode) == 0o700
    assert stat.S_IMODE(public.stat().st_mode) == 0o644  # doors are given the public key
    assert any(kind == "file" and ino == identity(public) for kind, ino, _ in synced)  # written durably too
    assert sorted(p.name for p in private.parent.iterdir()) == ["desk.key", "desk.pub"]  # no temporary file


def test_an_existing_desk_key_is_never_overwritten(tmp_path):
    private, public = tmp_path / "desk.key", tmp_path / "desk.pub"
    generate_keypair(private, public)
    before = private.read_bytes()
    with pytest.raises(ConfigError, match="not overwriting"):
        generate_keypair(private, tmp_path / "other.pub")
    assert private.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["desk.key", "desk.pub"]


def test_a_desk_key_on_a_filesystem_without_hard_links(tmp_path, monkeypatch):
    """FAT (a Pi's boot partition) has no hard links: the key is created exclusively instead,
    still 0600, still never over an existing one (found in review: keygen raised OSError there)."""
    def no_links(*_args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    private, public = tmp_path / "desk.key", tmp_path / "desk.pub"
    generate_keypair(private, public)
    load_private(private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="not overwriting"):
        generate_keypair(private, tmp_path / "other.pub")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["desk.key", "desk.pub"]
