"""The access keys a `facelink serve` accepts: a TOML file that only its owner may read.

    [keys.AKIAFACELINKDESK01]
    secret = "a long random secret"
    read_only = false              # optional: true refuses every operation that writes
    collections = ["staff"]        # optional: only these collections (absent: all)
    requests_per_second = 20       # optional: per-key rate limit (burst of the same size)
"""

from __future__ import annotations

import os
import stat

try:
    import tomllib  # novermin - the fallback below is for 3.10
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass
from pathlib import Path

from facelink.errors import ConfigError

DEFAULT_RATE = 20.0


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret: str
    read_only: bool = False
    collections: frozenset[str] | None = None  # None: every collection
    requests_per_second: float = DEFAULT_RATE

    def may_use(self, collection_id: str) -> bool:
        return self.collections is None or collection_id in self.collections


def load_keys(path: Path) -> dict[str, AccessKey]:
    """Keys by access key id. The file must exist, be 0600 (or stricter) and name at least one
    key: there is no anonymous access."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"serve credentials file {path}: {exc.strerror or exc}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"serve credentials file {path} is readable by others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
    if st.st_uid != os.getuid():
        raise ConfigError(f"serve credentials file {path} belongs to another user")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"serve credentials file {path}: {exc}") from None
    keys: dict[str, AccessKey] = {}
    for key_id, entry in (raw.get("keys") or {}).items():
        where = f"{path}: keys.{key_id}"
        if not isinstance(entry, dict) or not isinstance(entry.get("secret"), str) or len(entry["secret"]) < 16:
            raise ConfigError(f"{where}.secret must be a string of at least 16 characters")
        unknown = set(entry) - {"secret", "read_only", "collections", "requests_per_second"}
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}")
        cols = entry.get("collections")
        if cols is not None and (not isinstance(cols, list) or not all(isinstance(c, str) for c in cols)):
            raise ConfigError(f"{where}.collections must be a list of collection ids")
        rate = entry.get("requests_per_second", DEFAULT_RATE)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
            raise ConfigError(f"{where}.requests_per_second must be a positive number")
        if not isinstance(entry.get("read_only", False), bool):
            raise ConfigError(f"{where}.read_only must be true or false")
        keys[key_id] = AccessKey(key_id, entry["secret"], entry.get("read_only", False),
                                 frozenset(cols) if cols is not None else None, float(rate))
    if not keys:
        raise ConfigError(f"serve credentials file {path} names no [keys.<id>]: no one could call the endpoint")
    return keys
