"""The door's records of what it and its access panel did, on ``<prefix>/<device>/panel``: the
panel's verdicts (``facelink.panel/1``), each opening and each output off it commanded
(``facelink.panel-output/1``), and, for a GRANTED the door's own relay carried out, a credential
that broke on its way to the panel (``facelink.panel/1``, NO_RESPONSE ``send_failed``) or was
never sent to it (``not_sent``).

Every record goes through the outbox. The order against the relay is the fail-closed one: an
opening is recorded before the relay is driven (one that cannot be recorded opens nothing); an
off ends the running pulse first and is recorded after (locking is never withheld for a record).
A follow-up that cannot be written to the outbox (disk full) is logged critically and sent to the
broker directly, as an ACTUATION_FAILED is.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from facelink.access.osdp_verdicts import PanelOutput, PanelVerdict
from facelink.mqtt.client import Transport
from facelink.mqtt.outbox import Outbox, put_or_publish
from facelink.mqtt.schema import NOT_SENT, SEND_FAILED, EventMessage, PanelOutputMessage, PanelVerdictMessage
from facelink.mqtt.wall_clock import stamp

from .decision import Decision
from .door import DoorRelay

log = logging.getLogger(__name__)


@dataclass
class PanelRecords:
    outbox: Outbox
    transport: Transport
    topic: str  # <prefix>/<device>/panel
    device_id: str
    relay: DoorRelay

    # -- what the panel answered -----------------------------------------------------------
    def verdict(self, verdict: PanelVerdict) -> None:
        """The panel's answer to a card read, beside FaceLink's decision (raises when the outbox does)."""
        self._put(PanelVerdictMessage(event_id=str(uuid.uuid4()), **stamp(), device_id=self.device_id,
                                      **asdict(verdict)))

    def send_failed(self, granted: Decision, credential: str, reason: str) -> None:
        """The credential sent for ``granted``, which the door's own relay carried out, broke on the
        way (a Wiegand frame broken on the wire): the panel may have logged another badge for this
        opening, or none. A record beside the GRANTED says so (the door did open: no ACTUATION_FAILED)."""
        log.error("GRANTED %s: the credential sent to the panel broke on the way (the door's relay is what opens "
                  "the door): %s", granted.event_id, reason)
        self._no_response(granted, credential, SEND_FAILED, reason, "the panel send failure")

    def not_sent(self, granted: Decision, credential: str | None, reason: str) -> None:
        """``granted``, which the door's own relay carries out, was never sent to the panel: refused
        before sending (the user has no credential, ``credential`` None; the same badge within the
        debounce; the reader stopping). The door opens, and the panel's log has no read for it: a
        record beside the GRANTED says so (no ACTUATION_FAILED: the door did open)."""
        log.error("GRANTED %s: the panel was not sent the credential (the door's relay is what opens the door): %s",
                  granted.event_id, reason)
        self._no_response(granted, credential, NOT_SENT, reason, "the unsent panel credential")

    def _no_response(self, granted: Decision, credential: str | None, why: str, detail: str, what: str) -> None:
        verdict = PanelVerdict(granted.event_id, credential, "NO_RESPONSE", None, None, reason=why,
                               detail=detail[:1000])
        self._follow_up(PanelVerdictMessage(event_id=str(uuid.uuid4()), **stamp(),
                                            device_id=self.device_id, **asdict(verdict)),
                        f"{what} of GRANTED {granted.event_id}")

    # -- what the panel did to the door's output -------------------------------------------
    def output(self, output: PanelOutput) -> None:
        """The panel switched the door's output on (record, then drive the relay), off at once
        (end the running pulse, then record what was ended) or off once the running timed
        operation is done (record the pulse left to end at its time)."""
        if output.opens:
            self._opening(output)
        elif output.now:
            self._off(output)
        else:
            self._off_after(output)

    def _off_after(self, output: PanelOutput) -> None:
        """OSDP control code 3, permanent off once the timed operation is done: the running pulse
        ends at its time (``left_running``, naming what it was started for, and the older pulses
        still inside their own time in ``earlier_pulses``), and nothing more
        opens the door for it; with no pulse running, ``not_ended``."""
        running = self.relay.running_pulse()
        log.info("the panel switched the door's output off once its timed operation is done (control %s): %s",
                 output.command.get("control_code"),
                 f"the running pulse (for {running.started_for}) ends at its time" if running
                 else "no pulse of this door's runs")
        try:
            off = self._message(output, relay="left_running" if running else "not_ended",
                                refers_to=running.started_for if running else None,
                                earlier_pulses=list(running.earlier) if running and running.earlier else None,
                                earlier_pulses_unnamed=running.unnamed if running and running.unnamed else None)
        except Exception:  # noqa: BLE001 - nothing to undo: the record is what failed
            log.critical("the panel's output off cannot be recorded", exc_info=True)
            return
        self._follow_up(off, "the panel's output off after its timed operation")

    def _off(self, output: PanelOutput) -> None:
        ended = self.relay.end_pulse()  # first, whatever becomes of the record: locking is never withheld
        failed = ended.off_failed if ended else None
        if failed:
            log.error("the panel switched the door's output off (control %s) and the off failed: %s still "
                      "holds the lock released (retried): %s", output.command.get("control_code"),
                      f"the pulse for {ended.started_for}" if ended.started_for or ended.earlier
                      else "the lock output (an earlier off failed)", failed)
        else:
            log.info("the panel switched the door's output off (control %s): %s", output.command.get("control_code"),
                     f"the running pulse (for {ended.started_for}) ended" if ended else "no pulse of this door's ended")
        try:
            off = self._message(output, relay="off_failed" if failed else "ended" if ended else "not_ended",
                                refers_to=ended.started_for if ended else None, reason=failed,
                                earlier_pulses=list(ended.earlier) if ended and ended.earlier else None,
                                earlier_pulses_unnamed=ended.unnamed if ended and ended.unnamed else None)
        except Exception:  # noqa: BLE001 - the off was tried already; the record is what failed
            log.critical("the panel's output off cannot be recorded (%s)", "its off failed: the lock is "
                         "still held released" if failed else "the pulse was ended regardless", exc_info=True)
            return
        self._follow_up(off, "the panel's output off (its off failed)" if failed
                        else "the panel's output off (the pulse was ended regardless)")

    def _opening(self, output: PanelOutput) -> None:
        opens = self.relay.opens_door
        try:
            opening = self._message(output, relay="opening" if opens else "no_relay")
            self._put(opening)
        except Exception:  # noqa: BLE001 - not recorded: the door does not open for it
            log.critical("the panel's output command cannot be recorded: the door's relay is not driven",
                         exc_info=True)
            return
        log.info("the panel opens the door (event %s, likely for %s)", opening.event_id, output.likely_for)
        if not opens:
            return

        def failed(reason: str) -> None:
            log.error("the panel's output command did not open the door: %s", reason)
            self._follow_up(self._message(output, relay="failed", refers_to=opening.event_id, reason=reason[:300]),
                            f"the relay failure of panel opening {opening.event_id}")

        try:
            self.relay.pulse(None, on_failure=failed, event_id=opening.event_id)
        except Exception as exc:  # noqa: BLE001 - reported, the reader goes on
            failed(f"{type(exc).__name__}: {exc}")

    def _message(self, output: PanelOutput, **fields: Any) -> PanelOutputMessage:
        return PanelOutputMessage(event_id=str(uuid.uuid4()), **stamp(), device_id=self.device_id,
                                  command=output.command, likely_for=output.likely_for, **fields)

    # -- the outbox ------------------------------------------------------------------------
    def _put(self, message: EventMessage) -> None:
        payload = message.payload()
        self.outbox.put(payload["event_id"], self.topic, payload)

    def _follow_up(self, message: EventMessage, what: str) -> None:
        """Into the outbox; one that cannot be (e.g. disk full) is logged critically and sent to
        the broker directly (:func:`~facelink.mqtt.outbox.put_or_publish`). Never raises: what it
        follows has happened already."""
        payload = message.payload()
        put_or_publish(self.outbox, self.transport, payload["event_id"], self.topic, payload, what)
