"""The OSDP Secure Channel Base Key: 16 bytes, kept hex-encoded in a file only its owner reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from facelink.errors import ConfigError

SCBK_LEN = 16


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
    if len(key) != SCBK_LEN:
        raise ConfigError(f"{path} holds {len(key)} bytes; an OSDP SCBK is {SCBK_LEN}")
    return key


def save_scbk(path: Path, key: bytes) -> None:
    """Write the key atomically with mode 0600 (the directory 0700 if it is created)."""
    if len(key) != SCBK_LEN:
        raise ConfigError(f"an OSDP SCBK is {SCBK_LEN} bytes, got {len(key)}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    tmp.replace(path)
