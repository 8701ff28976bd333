"""The outbox pump: the ONE drainer of the outbox. Events are published oldest first and leave
the outbox only after the broker's PUBACK.

A rolling window of up to ``window`` events is in flight at once (``mqtt.publish_window``): they
are handed to the client in order on its one connection and their PUBACKs are awaited in order;
each PUBACK frees a place for the next event at once (the batched window before it waited for all
of a window's PUBACKs, and the link idled a round trip per window). Acknowledged events are deleted
in one transaction each time half a window (or more) has been acknowledged, and the rest when the
round ends: one fsync, not one per event; the events in flight travel meanwhile. The
first event without a PUBACK (timeout, disconnect) ends the round: it and every later event stay in
the outbox and are sent again, in order, on the next round. At least once: a crash between a PUBACK
and the delete, or a message paho re-sends after a reconnect, can deliver an event twice;
subscribers deduplicate by ``event_id`` (the audit logger does).

Only the pump's thread ever publishes outbox events. Shutdown does not drain on its own thread:
``close(flush_timeout_s)`` asks the pump to flush, and waits for it to finish, so an event can
never be in flight twice (which would publish it twice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from .client import Pending, Transport
from .outbox import Outbox, OutboxEvent

log = logging.getLogger(__name__)


class OutboxPump:
    def __init__(self, outbox: Outbox, transport: Transport, *, retry_s: float = 1.0, window: int = 100,
                 ack_timeout_s: float = 10.0, warn_every_s: float = 60.0) -> None:
        self.outbox = outbox
        self.transport = transport
        self.retry_s = retry_s
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.warn_every_s = warn_every_s
        self.delivered = 0
        self.failures = 0  # consecutive failed publish attempts
        self.error: str | None = None  # the outbox itself failed (e.g. disk full): why, until a round works
        self._not_deleted: list[int] = []  # acknowledged by the broker; their delete failed and is retried
        # handed over in a round that an outbox error ended: still the pump's own, awaited first in
        # the next round, never published again while paho has them in flight (review 98)
        self._in_flight: deque[tuple[OutboxEvent, Pending]] = deque()
        self.outbox_failures = 0  # rounds that failed in the outbox (each followed by a wait of retry_s)
        self._last_warn = -1e9
        self._closing = threading.Event()
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="outbox-pump", daemon=True)

    def start(self) -> OutboxPump:
        self._thread.start()
        return self

    # -- the pump thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                if self._closing.is_set() and self._flush_over():
                    self._delete_delivered()
                    return
                delivered = self._deliver_some()
                self._outbox_works()  # a round without an error: a failed delete would have raised
                if delivered:
                    continue
            except Exception as exc:  # noqa: BLE001 - the outbox failed (disk full, I/O): retried, never fatal
                self.outbox_failures += 1
                self._outbox_failed(exc)
                if self._closing.is_set():  # flushing: try again until the deadline, not in a spin
                    if time.monotonic() >= self._deadline:
                        return
                    time.sleep(min(self.retry_s, max(0.0, self._deadline - time.monotonic())))
                else:
                    self._closing.wait(self.retry_s)
                continue
            if self._closing.is_set():
                time.sleep(0.05)
            else:
                self.outbox.added.wait(self.retry_s)
                self.outbox.added.clear()

    def _flush_over(self) -> bool:
        return (time.monotonic() >= self._deadline or not self.transport.is_connected()
                or len(self.outbox) == 0)

    def _deliver_some(self) -> bool:
        """Deliver what the outbox holds, in order, up to ``window`` events in flight (a rolling
        window); False when idle or the broker is away (the first event without a PUBACK ends the
        round). Acknowledged events are deleted together each time half a window (or more) is
        acknowledged, and the rest when the round ends, while later ones travel."""
        if self._not_deleted:  # acknowledged by the broker, but their delete failed: that first,
            self.outbox.ack(self._not_deleted)  # not the same events published again and again
            self._not_deleted = []
            self._outbox_works()  # said at once: the round that follows may last (review 98)
        in_flight, self._in_flight = self._in_flight, deque()  # what an outbox error left in flight
        acked: list[int] = []  # acknowledged, not yet deleted
        last = in_flight[-1][0].seq if in_flight else 0  # the seq of the last event handed over
        sending, progressed = True, False
        failed: str | None = None  # the first event that got no PUBACK (or could not be handed over)
        try:
            while True:
                if sending and len(in_flight) < self.window:
                    if self._closing.is_set() and time.monotonic() >= self._deadline:
                        sending = False  # flushing, and out of time: only what is in flight is awaited
                    else:
                        for ev in self.outbox.peek(self.window - len(in_flight), after=last):
                            pending = self.transport.send(ev.topic, ev.payload)
                            if pending is None:  # not connected, or refused: this round sends no more
                                sending, failed = False, ev.event_id
                                break
                            in_flight.append((ev, pending))
                            last = ev.seq
                if not in_flight:
                    break
                ev, pending = in_flight[0]
                if not pending.wait(self.ack_timeout_s):
                    failed = ev.event_id  # it and everything after it stay, and are sent again
                    break
                before = len(acked)
                acked.append(in_flight.popleft()[0].seq)
                while in_flight and in_flight[0][1].done():  # and any after it acknowledged meanwhile
                    acked.append(in_flight.popleft()[0].seq)
                self.delivered += len(acked) - before
                if not progressed:
                    progressed = True
                    self._delivering_again()
                if len(acked) >= max(1, self.window // 2):
                    self.outbox.ack(acked)  # one transaction: one fsync for half a window
                    acked = []
                    self._outbox_works()  # a round can last as long as events keep coming
            self.outbox.ack(acked)
        except Exception:
            self._not_deleted = acked  # delivered: only their delete is retried, not the publish
            self._in_flight = in_flight  # still travelling: awaited next round, not published again
            raise
        if failed is not None:
            self._publish_failed(failed)
            return False
        return progressed

    def _delivering_again(self) -> None:
        if self.failures:
            log.info("outbox: delivering again after %d failed attempt(s)", self.failures)
            self.failures = 0

    def _delete_delivered(self) -> None:
        """Stopping: one last try at deleting what the broker acknowledged (it needs the disk, not
        the broker), so that it is not sent again on the next start."""
        self._not_deleted += [ev.seq for ev, pending in self._in_flight if pending.done()]
        self._in_flight.clear()
        if self._not_deleted:
            try:
                self.outbox.ack(self._not_deleted)
                self._not_deleted = []
            except Exception as exc:  # noqa: BLE001 - they stay, and are sent again (at least once)
                self._outbox_failed(exc)

    def _outbox_works(self) -> None:
        """A round went through without an error: whatever failed in the outbox before works again."""
        if self.error is not None:
            log.warning("outbox: working again (it had failed: %s)", self.error)
            self.error = None

    def _publish_failed(self, event_id: str) -> None:
        """Retried on the next round; said in the log at most every ``warn_every_s``."""
        self.failures += 1
        now = time.monotonic()
        if now - self._last_warn >= self.warn_every_s:
            self._last_warn = now
            state = "connected but not acknowledged" if self.transport.is_connected() else "broker unreachable"
            log.warning("outbox: cannot publish event %s (%s); %d event(s) waiting, retrying every %.0f s",
                        event_id, state, len(self.outbox), self.retry_s)

    def _outbox_failed(self, exc: Exception) -> None:
        """Reading or deleting from the outbox raised: events not deleted stay and are sent again
        (at least once), the thread goes on. Said on health (``outbox_error``) until a round works;
        logged with its traceback the first time, then at most every ``warn_every_s``."""
        first = self.error is None
        self.error = f"{type(exc).__name__}: {exc}"[:300]
        now = time.monotonic()
        if first or now - self._last_warn >= self.warn_every_s:
            self._last_warn = now
            log.error("outbox: %s; retrying every %.0f s", self.error, self.retry_s, exc_info=first)

    # -- shutdown --------------------------------------------------------------------------
    def close(self, flush_timeout_s: float = 10.0) -> int:
        """Ask the pump to deliver what it can within ``flush_timeout_s`` (only while connected),
        wait for it to stop, and return how many events stay in the outbox for the next start."""
        self._deadline = time.monotonic() + flush_timeout_s
        self._closing.set()
        self.outbox.added.set()
        if self._thread.is_alive():
            self._thread.join(flush_timeout_s + 15.0)  # a publish in flight may wait its own timeout
        elif self._thread.ident is None:  # never started: this caller is the only drainer
            self._run()
        try:
            return len(self.outbox)
        except Exception:  # noqa: BLE001 - the outbox cannot be read (disk I/O): its file keeps what it has
            log.exception("outbox: cannot count the events left")
            return -1
