"""One GRANTED on its way to the door: which outputs were told, and how a failure is reported.

The access panel is told first, then the door's own relay is pulsed, so that a relay that fails
knows whether the panel, which may open the door on its own, was sent the credential: the audit
trail must then not say the door stayed shut.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .decision import Decision

log = logging.getLogger(__name__)


@dataclass
class Actuation:
    """``report`` publishes an ACTUATION_FAILED for ``granted`` (the daemon's ``actuation_failed``);
    ``record_send_failure`` records, beside ``granted``, a credential that broke on its way to the
    panel while the door's own relay opened the door (``PanelRecords.send_failed``), and
    ``record_not_sent`` one that was refused before it was sent (``PanelRecords.not_sent``);
    ``relay_opens_door`` says whether the door's own relay, not the panel, is what opens it."""

    granted: Decision
    relay_opens_door: bool
    report: Callable[[Decision, str], None]
    record_send_failure: Callable[[Decision, str, str], None]
    record_not_sent: Callable[[Decision, str | None, str], None]
    panel_told: bool = False  # the credential went to the panel (it may have opened the door)
    credential: str | None = None  # the credential handed to the panel (``sending``)

    def sending(self, credential: str) -> None:
        """The panel link is handing ``credential`` to the panel for ``granted``."""
        self.credential = credential

    def panel_refused(self, reason: str) -> None:
        """Refused before anything was sent: nothing reached the panel (where the door's own relay
        opens the door, a record beside the GRANTED says so: ``record_not_sent``)."""
        self.panel_told = False
        self.panel_failed(reason)

    def panel_failed(self, reason: str) -> None:
        """A send that failed after it began (a Wiegand frame broken on the wire) leaves
        ``panel_told`` as it is: part or all of it reached the panel, which may have read it (the
        reason itself may say so, even another badge). Where the panel opens the door, nothing
        did: ACTUATION_FAILED. Where the door's own relay opened it, the door did open, but the
        panel may have logged someone else's badge for it: recorded beside the GRANTED."""
        if not self.relay_opens_door:  # the panel is what opens this door: nothing did
            self.report(self.granted, reason)
        elif self.panel_told and self.credential is not None:  # some or all of it may have reached the panel
            self.record_send_failure(self.granted, self.credential, reason)
        else:  # refused before sending: the panel got nothing, the door's relay opens the door
            self.record_not_sent(self.granted, self.credential, reason)

    def relay_failed(self, reason: str) -> None:
        if self.panel_told:  # (first: reasons are cut at 300 characters)
            reason = f"the access panel was sent the credential and may have opened the door; relay: {reason}"
        self.report(self.granted, reason)
