"""The panel's secure channel key (osdp.scbk_file) is written so that a power cut keeps it: the
new key's data reaches the disk before the rename puts it at the file's name, and the rename
itself is made durable by fsyncing the folder (the panel was told the key was kept: a door that
came back with the old key, or none, could no longer talk to it). The file is 0600, a folder
made for it 0700."""

from __future__ import annotations

import stat

from facelink.access.scbk import load_scbk, save_scbk

from ..fsyncs import recording_fsyncs

OLD = bytes.fromhex("00112233445566778899aabbccddeeff")
NEW = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")


def test_the_key_and_its_rename_are_on_disk_before_save_returns(tmp_path):
    path = tmp_path / "keys" / "osdp_scbk"
    save_scbk(path, OLD)
    with recording_fsyncs(lambda: load_scbk(path)) as synced:  # (kind, (dev, inode), the key at `path` then)
        save_scbk(path, NEW)

    st, folder = path.stat(), path.parent.stat()
    key_file, key_folder = (st.st_dev, st.st_ino), (folder.st_dev, folder.st_ino)
    # the new key's own data first, while the name still held the old key (nothing half-written is ever there)
    assert ("file", key_file, OLD) in synced, f"the new key's data was not fsynced before its rename: {synced}"
    # then the folder, once the rename put the new key at the name: the rename survives a power cut
    assert ("folder", key_folder, NEW) in synced, f"the key's folder was not fsynced after the rename: {synced}"
    assert synced.index(("file", key_file, OLD)) < synced.index(("folder", key_folder, NEW))
    assert load_scbk(path) == NEW
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(folder.st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["osdp_scbk"]  # no temporary file left
