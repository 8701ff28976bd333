"""The OSDP Secure Channel Base Key: 16 bytes, kept hex-encoded in a file only its owner reads."""

from __future__ import annotations

import stat
from pathlib import Path

from facelink.config.paths import write_durably
from facelink.errors import ConfigError

SCBK_LEN = 16
# OSDP's published install key (SCBK-D, 0x30..0x3F) and an all-zero key: anyone knows them, so a
# "site key" equal to one of them secures nothing (a panel with no site key configured may send one)
WEAK_SCBKS = {bytes(range(0x30, 0x40)): "OSDP's published install key (SCBK-D)", bytes(SCBK_LEN): "all zeros"}


def check_scbk(key: bytes) -> None:
    """ConfigError for a key of the wrong length or one that everyone knows."""
    if len(key) != SCBK_LEN:
        raise ConfigError(f"an OSDP SCBK is {SCBK_LEN} bytes, got {len(key)}")
    if key in WEAK_SCBKS:
        raise ConfigError(f"the OSDP secure channel key is {WEAK_SCBKS[key]}: give the panel a site key")


def load_scbk(path: Path) -> bytes | None:
    """The key in ``path``; None when the file does not exist (the PD may then be installed).

    A file that others can read, or that does not hold exactly 16 hex-encoded bytes, is refused:
    the door does not talk to a panel with a key it cannot trust to be secret.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): chmod 600 it")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{path} does not hold a hex-encoded key") from None
    try:
        check_scbk(key)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return key


def save_scbk(path: Path, key: bytes) -> None:
    """Write the key atomically with mode 0600 (the directory 0700 if it is created), durably."""
    check_scbk(key)
    write_durably(path, (key.hex() + "\n").encode())
