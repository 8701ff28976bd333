"""The OSDP reader's secure-channel key, from install mode to enforced: one owner for the stage.

    INSTALLING --KEYSET written--> KEY_SAVED --libosdp started again with it--> ENFORCED
                                      |  ^
                       start failed   v  |  retried after a back-off (``retry_after_s``)
                                   (fault)

A reader started with a key file is ENFORCED from the start. Only ENFORCED sends card reads and
obeys panel commands: before, a channel can only be under the published install key (anyone's),
or none at all. A KEYSET refused (the published key, zeros, a file that cannot be written) is
``key_error`` and changes no stage. A restart that fails leaves the reader KEY_SAVED, sending
nothing, and is tried again (1 s, 5 s, then every 30 s) until it works or the reader closes.

Pure bookkeeping: no libosdp, no threads, no lock. ``OsdpReader`` calls it from libosdp's thread
(a KEYSET), its verdict thread (a restart, ``retry_at``) and the pipeline (``enforced``, under
the send lock). A restart reads ``panel_key`` only once libosdp's thread has stopped, so the
latest KEYSET is the key it starts with; every other read is of one attribute.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Stage(enum.Enum):
    INSTALLING = "installing"  # no key: waiting for the panel's KEYSET under the install key
    KEY_SAVED = "key_saved"  # the panel's key is written; libosdp must start again with it
    ENFORCED = "enforced"  # libosdp runs with the key and EnforceSecure


RETRY_AFTER_S = (1.0, 5.0, 30.0)  # the last repeats


@dataclass
class Provisioning:
    stage: Stage
    retry_after_s: tuple[float, ...] = RETRY_AFTER_S
    panel_key: bytes | None = None  # the key of the panel's latest KEYSET (KEY_SAVED)
    key_error: str | None = None  # why the panel's latest KEYSET was refused
    restart_error: str | None = None  # why libosdp did not start again with the key (KEY_SAVED)
    restart_failures: int = 0
    retry_at: float | None = None  # when to try starting libosdp again (monotonic)

    @classmethod
    def at_start(cls, key: bytes | None, retry_after_s: tuple[float, ...] = RETRY_AFTER_S) -> Provisioning:
        if not retry_after_s or min(retry_after_s) <= 0:
            raise ValueError("retry_after_s: one or more delays, each > 0")
        return cls(Stage.INSTALLING if key is None else Stage.ENFORCED, tuple(retry_after_s))

    @property
    def enforced(self) -> bool:
        """Card reads may be sent and panel commands obeyed."""
        return self.stage is Stage.ENFORCED

    @property
    def fault(self) -> str | None:
        """Why the reader sends nothing while the door runs (health's ``osdp_fault``), or None. A
        key change refused while enforced is logged, not a fault: the reader runs on its key."""
        return self.restart_error or (None if self.enforced else self.key_error)

    def key_written(self, key: bytes) -> bool:
        """The panel's KEYSET was written to the key file; True when libosdp must start again
        with it (it runs in install mode: its flags are fixed at start). Enforced, libosdp
        itself changes its key: nothing to do. A second KEYSET before the restart: the latest."""
        self.key_error = None
        if self.stage is Stage.ENFORCED:
            return False
        self.stage, self.panel_key = Stage.KEY_SAVED, bytes(key)
        self.retry_at = None  # the verdict thread restarts it now
        return True

    def key_refused(self, why: str) -> None:
        self.key_error = why

    def restarted(self) -> None:
        self.stage, self.panel_key = Stage.ENFORCED, None
        self.restart_error, self.restart_failures, self.retry_at = None, 0, None

    def restart_failed(self, why: str, now: float) -> float:
        """libosdp did not start again; when to try next (monotonic)."""
        self.restart_failures += 1
        delay = self.retry_after_s[min(self.restart_failures, len(self.retry_after_s)) - 1]
        self.retry_at = now + delay
        self.restart_error = (f"the reader could not start again with the panel's key ({why}); "
                              f"{self.restart_failures} attempt(s), the next in {delay:g} s: "
                              "restart FaceLink if this persists")
        return self.retry_at

    def stop_retrying(self) -> None:
        """The reader is closing: no restart is tried again (it stays down). Without this a
        retry that fell due while closing would be due on every pass of the verdict loop."""
        self.retry_at = None

    def retry_due(self, now: float) -> bool:
        return self.stage is Stage.KEY_SAVED and self.retry_at is not None and now >= self.retry_at
