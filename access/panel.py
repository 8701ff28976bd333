"""What a decision sends to an access-control panel (``door.output``): nothing, an OSDP CardRead
or a Wiegand pulse train carrying the granted user's credential.

Only GRANTED sends anything; a GRANTED user without a credential is logged and sends nothing
(the panel would not know them). The door's own relay (``door.relay``) is separate.

A GRANTED that is not sent says why: at once (``on_decision``'s return) or, for a Wiegand frame
that fails on the wire, later through ``on_failure`` from the sender's thread. The daemon makes
either an ACTUATION_FAILED when the panel is what opens the door; where the door's own relay
opened it, a send that broke on the wire is recorded beside the GRANTED (``facelink.panel/1``,
``send_failed``: the panel may have logged another badge for that opening).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from facelink.enroll.store import Store
from facelink.errors import FailureReport, ignore_failure

from .wiegand import Credential

log = logging.getLogger(__name__)


class CredentialSender(Protocol):
    def send(self, credential: Credential, event_id: str, on_failure: FailureReport = ignore_failure) -> str | None:
        """Start sending; why it was not, or None (a later failure goes to ``on_failure``)."""
        ...

    def health(self) -> dict[str, Any]: ...

    @property
    def fault(self) -> str | None:
        """Why nothing can be sent to the panel now (it lasts until fixed), or None."""
        ...

    def close(self) -> None: ...


class OsdpSender:
    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def send(self, credential: Credential, event_id: str, on_failure: FailureReport = ignore_failure) -> str | None:
        """The panel's answer (or NO_RESPONSE) to a read sent is recorded as its verdict."""
        not_sent = self.reader.send_card(credential, event_id)
        return None if not_sent is None else f"access panel: {not_sent}"

    def health(self) -> dict[str, Any]:
        r = self.reader
        return {"osdp_online": r.online, "osdp_secure": r.secure, "osdp_provisioned": r.provisioned,
                "osdp_fault": r.fault, "osdp_card_reads": r.state.card_reads,
                "osdp_commands": r.state.commands}

    @property
    def fault(self) -> str | None:
        fault = self.reader.fault
        return None if fault is None else f"OSDP reader: {fault}"

    def close(self) -> None:
        self.reader.close()


class PanelLink:
    """Looks up the granted user's credential in the collection and hands it to the sender."""

    def __init__(self, store: Store, collection_id: str, sender: CredentialSender | None) -> None:
        self.store = store
        self.collection_id = collection_id
        self.sender = sender

    @property
    def sends(self) -> bool:
        """Whether GRANTEDs go to a panel (``door.output`` is not none)."""
        return self.sender is not None

    def on_decision(self, decision: Any, on_failure: FailureReport = ignore_failure, *,
                    on_sending: Callable[[str], None] | None = None) -> str | None:
        """Send a GRANTED user's credential; why a GRANTED was not sent (the panel will not open
        the door for it), or None (sent, or nothing to send: no panel, not a GRANTED). A send
        that fails after this returns is reported through ``on_failure``; ``on_sending`` is told
        the credential first (what a report of that failure is about)."""
        if self.sender is None or decision.decision != "GRANTED" or decision.user_id is None:
            return None
        text = self.store.user_credential(self.collection_id, decision.user_id)
        if text is None:
            log.warning("user %s has no credential: nothing sent to the panel", decision.user_id)
            return f"access panel: user {decision.user_id} has no credential, nothing was sent"
        credential = Credential.parse(text)
        if on_sending is not None:
            on_sending(str(credential))
        return self.sender.send(credential, decision.event_id, on_failure)

    def health(self) -> dict[str, Any]:
        return {} if self.sender is None else self.sender.health()

    @property
    def fault(self) -> str | None:
        """Why GRANTEDs cannot reach the panel now (the daemon publishes it as ERROR), or None."""
        return None if self.sender is None else self.sender.fault

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()


def make_panel_link(settings: Any, store: Store, *, on_verdict: Callable | None = None,
                    on_output: Callable | None = None) -> PanelLink:
    """``door.output``: none | osdp | wiegand."""
    out = settings.door.output
    sender: CredentialSender | None = None
    if out == "osdp":
        from .osdp_pd import OsdpReader

        o = settings.osdp
        sender = OsdpSender(OsdpReader(o.device, address=o.address, baud=o.baud, scbk_file=o.scbk_file,
                                       install_mode=o.install_mode, debounce_s=o.debounce_s,
                                       verdict_timeout_s=o.verdict_timeout_s, on_verdict=on_verdict,
                                       on_output=on_output))
    elif out == "wiegand":
        from .wiegand_gpio import WiegandGpioOutput

        w = settings.wiegand
        sender = WiegandGpioOutput(w.d0_pin, w.d1_pin, w.pulse_width_us, w.pulse_interval_us)
    return PanelLink(store, settings.matching.collection_id, sender)
