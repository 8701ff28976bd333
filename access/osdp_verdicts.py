"""Which card read an access panel's command answers. OSDP carries no request id, so the OSDP
reader keeps this book: the card reads it has sent, which of them the panel has polled (libosdp's
event completion) and which are still waiting for an answer. Pure bookkeeping, no thread and no
libosdp, so every rule below is tested on its own (tests/access/test_osdp_verdicts.py).

The rules:

- A panel command answers the newest card read the panel has already polled. A command that came
  before a read reached the panel cannot be that read's answer; with no polled read open it is
  not a verdict at all (an output-on still drives the door: the panel decides).
- Once a newer read reaches the panel, the older open ones close ``NO_RESPONSE``.
- A read with no answer within ``verdict_timeout_s`` of being sent closes ``NO_RESPONSE``. One the
  panel never polled (offline, not yet in secure channel) must not reach it later, when nobody is
  at the door: ``expire`` says so, the reader flushes libosdp's event queue and calls ``flushed``
  with the reads that flush dropped for good. (libosdp can only empty its whole queue: the
  reader hands the newer reads still inside their window to it again at once, in order, and
  those stay open. A read the panel had already polled was not in the queue: it stays open too,
  even if the book has not heard of its delivery yet.)
- ``overlaps`` on a verdict names the newest earlier read the panel had polled less than
  2 x ``verdict_timeout_s`` before this one (answered or not: a grant's output command may
  follow its LED): the panel's late command for that read would look exactly like this one's.
- Every ``NO_RESPONSE`` says why in ``reason``: ``no_answer`` (the panel polled it and said
  nothing within the window), ``superseded`` (a newer read reached the panel first),
  ``not_polled`` (it never reached the panel: offline, not in secure channel, or libosdp gave it
  up) or ``reader_stopped`` (the reader stopped before its window ended).
- Reads are numbered as they are handed to libosdp; a flush names the reads it dropped by number,
  including one whose ``sent`` the book has not seen yet.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

NO_RESPONSE = "NO_RESPONSE"
# why a read closed NO_RESPONSE (``PanelVerdict.reason``; facelink.panel/1 ``reason``)
NO_ANSWER = "no_answer"
SUPERSEDED = "superseded"
NOT_POLLED = "not_polled"
READER_STOPPED = "reader_stopped"


@dataclass(frozen=True)
class PanelVerdict:
    decision_event_id: str
    credential: str | None  # None only for not_sent: a user who has no credential
    verdict: str  # GRANTED | DENIED | NO_RESPONSE
    command: dict[str, Any] | None
    latency_s: float | None
    overlaps: str | None = None
    reason: str | None = None  # NO_RESPONSE only: NO_ANSWER | SUPERSEDED | NOT_POLLED | READER_STOPPED |
    # send_failed | not_sent
    detail: str | None = None  # send_failed / not_sent only: how the credential broke on its way, or why not sent


@dataclass(frozen=True)
class PanelOutput:
    """The panel switched the door's output on (what ``on_output`` is handed): its command, and
    the newest card read of the door's the panel had polled less than 2 x ``verdict_timeout_s``
    before (``likely_for``: OSDP carries no request id, so that grant is what the opening most
    likely carries out; None: no read of the door's -- the panel's own unlock: its software, a
    schedule, an operator, another reader). ``opens`` False: the panel switched it off -- at once
    (``now``, control codes 1 and 6: the door locks now, ending a running pulse, recorded after),
    or once the running timed operation is done (not ``now``, code 3: a running pulse ends at its
    time, the record names it)."""

    command: dict[str, Any]
    likely_for: str | None
    opens: bool = True
    now: bool = True  # an off: at once (codes 1, 6), or after the running timed operation (3)


@dataclass
class CardRead:
    """A card read from the moment it is handed to libosdp until it is closed."""

    event_id: str
    credential: str
    data: bytes  # the Wiegand bits as sent: libosdp's completion names the event by them
    sent_at: float
    deadline: float
    delivered_at: float | None = None
    overlaps: str | None = None
    seq: int = 0  # the reader's running number: the order libosdp got them in


class VerdictBook:
    """The open card reads, oldest first. Every method returns the verdicts it closed."""

    def __init__(self, verdict_timeout_s: float) -> None:
        self.verdict_timeout_s = verdict_timeout_s
        self.open: list[CardRead] = []
        # closed polled reads: (delivered_at, event_id, verdict)
        self._polled: deque[tuple[float, str, str]] = deque(maxlen=16)
        self._dropped: set[int] = set()  # reads a flush dropped before the book heard of them
        self._last_seq = 0  # the newest read the book has heard of (they come in order)

    def sent(self, read: CardRead) -> list[PanelVerdict]:
        self._last_seq = max(self._last_seq, read.seq)
        if read.seq in self._dropped:  # flushed before the book heard of it
            self._dropped.discard(read.seq)
            return [self._unanswered(read, NOT_POLLED)]
        self.open.append(read)
        return []

    def refused(self, read: CardRead) -> None:
        """libosdp did not take it: it never existed for the panel."""
        self.open = [r for r in self.open if r is not read]

    def delivered(self, data: bytes, status: int, now: float) -> list[PanelVerdict]:
        """libosdp's event completion: the panel polled the oldest undelivered read with ``data``
        (``status`` 0), or libosdp gave it up (anything else)."""
        read = next((r for r in self.open if r.delivered_at is None and r.data == data), None)
        if read is None:
            return []
        if status != 0:
            self.open.remove(read)
            return [self._unanswered(read, NOT_POLLED)]
        read.delivered_at = now
        older = self.open[:self.open.index(read)]
        self.open = self.open[len(older):]
        closed = [self._unanswered(r, SUPERSEDED) for r in older]  # the panel moved on
        horizon = now - 2 * self.verdict_timeout_s
        earlier = [event_id for at, event_id, _ in self._polled if at >= horizon and event_id != read.event_id]
        read.overlaps = earlier[-1] if earlier else None
        return closed

    def answer(self, verdict: str, command: dict[str, Any], now: float) -> PanelVerdict | None:
        """The panel's LED or output command: the verdict on the newest polled read, if any."""
        read = next((r for r in reversed(self.open) if r.delivered_at is not None), None)
        if read is None:
            return None
        self.open.remove(read)
        return self._close(read, verdict, command, now)

    def polled_recently(self, now: float) -> str | None:
        """The newest read (open or closed) the panel polled less than 2 x ``verdict_timeout_s``
        before ``now``: the grant a command coming now most likely answers (``PanelOutput``). One
        the panel DENIED is not it: an opening right after a refusal is the panel's own unlock
        (an operator, a schedule, an exit button) or a late one for an earlier grant."""
        horizon = now - 2 * self.verdict_timeout_s
        polled = [(r.delivered_at, r.event_id) for r in self.open if r.delivered_at is not None]
        closed = [(at, event_id) for at, event_id, verdict in self._polled if verdict != "DENIED"]
        recent = [(at, event_id) for at, event_id in [*closed, *polled] if horizon <= at <= now]
        return max(recent)[1] if recent else None

    def expire(self, now: float) -> tuple[list[PanelVerdict], bool]:
        """Close the reads past their deadline; True when one of them never reached the panel."""
        late = [r for r in self.open if r.deadline <= now]
        self.open = [r for r in self.open if r.deadline > now]
        return [self._unanswered(r, NOT_POLLED if r.delivered_at is None else NO_ANSWER) for r in late], \
            any(r.delivered_at is None for r in late)

    def stop(self) -> list[PanelVerdict]:
        """The reader stopped (libosdp is gone): every open read closes, its window cut short."""
        late, self.open = self.open, []
        return [self._unanswered(r, READER_STOPPED) for r in late]

    def flushed(self, dropped: frozenset[int]) -> list[PanelVerdict]:
        """libosdp's event queue was emptied and the reads numbered in ``dropped`` are gone from it
        for good: none of them reaches the panel (one the book has not heard of yet closes when
        it does)."""
        # a read the panel polled was not in libosdp's queue any more, whatever ``dropped`` says
        # (on doubt the reader names every read it handed over)
        gone = [r for r in self.open if r.seq in dropped and r.delivered_at is None]
        self.open = [r for r in self.open if all(r is not g for g in gone)]
        self._dropped |= {seq for seq in dropped if seq > self._last_seq}
        return [self._unanswered(r, NOT_POLLED) for r in gone]

    def next_deadline(self) -> float | None:
        return min((r.deadline for r in self.open), default=None)

    def _unanswered(self, read: CardRead, reason: str) -> PanelVerdict:
        return self._close(read, NO_RESPONSE, None, None, reason)

    def _close(self, read: CardRead, verdict: str, command: dict[str, Any] | None,
               received_at: float | None, reason: str | None = None) -> PanelVerdict:
        if read.delivered_at is not None:
            self._polled.append((read.delivered_at, read.event_id, verdict))
        latency = None if received_at is None else round(max(0.0, received_at - read.sent_at), 3)
        return PanelVerdict(read.event_id, read.credential, verdict, command, latency, read.overlaps, reason)
