"""Which card read a panel's command answers (facelink.access.osdp_verdicts): each rule on its own,
on a clock the test sets. The same book runs inside the OSDP reader (tests/access/test_osdp.py)."""

from __future__ import annotations

from facelink.access.osdp_verdicts import CardRead, VerdictBook

T = 2.0  # verdict_timeout_s
GREEN = {"command": "LED", "on_color": 2}


def read(event_id: str, data: bytes, at: float, seq: int = 0) -> CardRead:
    return CardRead(event_id, f"H10301:1:{data.hex()}", data, at, at + T, seq=seq)


def verdicts(closed) -> list[tuple]:
    """(event, verdict, overlaps); a NO_RESPONSE as ``NO_RESPONSE/<reason>``."""
    return [(v.decision_event_id, v.verdict if v.reason is None else f"{v.verdict}/{v.reason}", v.overlaps)
            for v in closed]


def test_a_command_before_the_panel_polled_the_read_is_not_its_answer():
    book = VerdictBook(T)
    book.sent(read("e1", b"\x01", 0.0))
    assert book.answer("GRANTED", GREEN, 0.1) is None  # the panel has not seen e1 yet
    assert book.delivered(b"\x01", 0, 0.2) == []
    v = book.answer("GRANTED", GREEN, 0.5)
    assert (v.decision_event_id, v.verdict, v.latency_s, v.overlaps) == ("e1", "GRANTED", 0.5, None)
    assert book.answer("GRANTED", GREEN, 0.6) is None  # the output after the LED: e1 is answered
    assert book.open == []


def test_a_newer_polled_read_closes_the_older_ones_and_names_the_overlap():
    book = VerdictBook(T)
    book.sent(read("e1", b"\x01", 0.0))
    book.sent(read("e2", b"\x02", 0.1))
    assert book.delivered(b"\x01", 0, 0.1) == []
    assert verdicts(book.delivered(b"\x02", 0, 0.3)) == [("e1", "NO_RESPONSE/superseded", None)]
    assert verdicts([book.answer("DENIED", GREEN, 0.4)]) == [("e2", "DENIED", "e1")]


def test_a_read_never_polled_is_no_overlap():
    book = VerdictBook(T)
    book.sent(read("e1", b"\x01", 0.0))
    book.sent(read("e2", b"\x02", 0.1))
    assert verdicts(book.delivered(b"\x02", 0, 0.3)) == [("e1", "NO_RESPONSE/superseded", None)]
    assert verdicts([book.answer("GRANTED", GREEN, 0.4)]) == [("e2", "GRANTED", None)]


def test_a_read_that_timed_out_at_the_panel_is_still_an_overlap_for_a_while():
    book = VerdictBook(T)
    book.sent(read("e1", b"\x01", 0.0))
    book.delivered(b"\x01", 0, 0.1)
    closed, undelivered = book.expire(T)
    assert verdicts(closed) == [("e1", "NO_RESPONSE/no_answer", None)] and not undelivered
    book.sent(read("e2", b"\x02", 2.4))
    book.delivered(b"\x02", 0, 2.5)  # the panel may still answer e1 now
    assert verdicts([book.answer("GRANTED", GREEN, 2.6)]) == [("e2", "GRANTED", "e1")]
    book.sent(read("e3", b"\x03", 10.0))
    book.delivered(b"\x03", 0, 10.1)  # e1 was polled 10 s ago (> 2 x T): not an overlap any more
    assert verdicts([book.answer("GRANTED", GREEN, 10.2)]) == [("e3", "GRANTED", None)]


def test_an_unpolled_read_that_times_out_is_flushed_and_its_namesake_matched_right():
    book = VerdictBook(T)
    book.sent(read("a", b"\x07", 0.0, seq=1))  # the panel is offline
    closed, undelivered = book.expire(T)
    assert verdicts(closed) == [("a", "NO_RESPONSE/not_polled", None)] and undelivered  # -> flush libosdp
    assert book.flushed(frozenset({1})) == []  # already closed
    book.sent(read("b", b"\x07", 3.5, seq=2))  # the same badge again after the debounce
    book.delivered(b"\x07", 0, 3.6)
    assert verdicts([book.answer("GRANTED", GREEN, 3.7)]) == [("b", "GRANTED", None)]


def test_flushed_closes_only_what_libosdp_dropped():
    book = VerdictBook(T)
    book.sent(read("e1", b"\x01", 0.0, seq=1))
    book.delivered(b"\x01", 0, 0.1)
    book.sent(read("e2", b"\x02", 0.5, seq=2))
    book.sent(read("e3", b"\x03", 0.6, seq=3))  # polled already; the book has not heard yet
    assert verdicts(book.flushed(frozenset({1, 2}))) == [("e2", "NO_RESPONSE/not_polled", None)]  # e1 was polled
    assert [r.event_id for r in book.open] == ["e1", "e3"]
    book.delivered(b"\x03", 0, 0.7)
    assert verdicts([book.answer("GRANTED", GREEN, 0.8)]) == [("e3", "GRANTED", "e1")]


def test_a_failed_delivery_and_a_refused_read_close_without_an_answer():
    book = VerdictBook(T)
    refused = read("r", b"\x09", 0.0)
    book.sent(refused)
    book.refused(refused)
    assert book.open == [] and book.next_deadline() is None
    book.sent(read("e1", b"\x01", 1.0))
    assert book.next_deadline() == 1.0 + T
    assert verdicts(book.delivered(b"\x01", -1, 1.2)) == [("e1", "NO_RESPONSE/not_polled", None)]
    assert book.answer("GRANTED", GREEN, 1.3) is None
    assert book.delivered(b"\x05", 0, 1.4) == []  # a completion for nothing we sent


def test_a_flush_covers_a_read_handed_to_libosdp_before_the_book_heard_of_it():
    book = VerdictBook(T)
    book.sent(read("a", b"\x07", 0.0, seq=1))
    book.expire(T)
    late = read("b", b"\x08", 1.9, seq=2)  # handed to libosdp just before the flush; "sent" after
    assert book.flushed(frozenset({1, 2})) == []
    assert verdicts(book.sent(late)) == [("b", "NO_RESPONSE/not_polled", None)]  # flushed with the stale one
    assert book.sent(read("c", b"\x09", 2.5, seq=3)) == [] and [r.event_id for r in book.open] == ["c"]


def test_a_grants_follow_up_command_can_look_like_the_next_reads_answer():
    book = VerdictBook(T)
    book.sent(read("a", b"\x01", 0.0))
    book.delivered(b"\x01", 0, 0.1)
    assert verdicts([book.answer("GRANTED", GREEN, 0.2)]) == [("a", "GRANTED", None)]  # the LED
    book.sent(read("b", b"\x02", 0.3))
    book.delivered(b"\x02", 0, 0.4)  # polled before a's output command came
    assert verdicts([book.answer("GRANTED", GREEN, 0.5)]) == [("b", "GRANTED", "a")]


def test_a_flush_keeps_the_reads_sent_again_open_until_a_later_flush_drops_them():
    book = VerdictBook(T)
    book.sent(read("a", b"\x07", 0.0, seq=1))
    book.sent(read("b", b"\x08", 1.0, seq=2))
    unbooked = read("c", b"\x09", 1.5, seq=3)
    assert verdicts(book.expire(T)[0]) == [("a", "NO_RESPONSE/not_polled", None)]
    # libosdp emptied its queue; b and c (whose "sent" the book has not seen yet) went back in
    assert book.flushed(frozenset({1})) == []
    assert book.sent(unbooked) == [] and [r.event_id for r in book.open] == ["b", "c"]
    book.delivered(b"\x08", 0, 2.2)  # the panel is back: b is polled and answered
    assert verdicts([book.answer("GRANTED", GREEN, 2.3)]) == [("b", "GRANTED", None)]
    # c was not polled in time either: it closes, and the next flush drops it for good
    assert verdicts(book.expire(1.5 + T)[0]) == [("c", "NO_RESPONSE/not_polled", None)]
    assert book.flushed(frozenset({3, 4})) == []
    assert verdicts(book.sent(read("d", b"\x0a", 3.4, seq=4))) == [("d", "NO_RESPONSE/not_polled", None)]
    assert book._dropped == set()  # nothing left over to leak


def test_a_stopped_reader_closes_what_is_open_and_says_so():
    book = VerdictBook(T)
    book.sent(read("polled", b"\x01", 0.0))
    book.delivered(b"\x01", 0, 0.1)
    book.sent(read("queued", b"\x02", 0.5))
    assert verdicts(book.stop()) == [("polled", "NO_RESPONSE/reader_stopped", None),
                                     ("queued", "NO_RESPONSE/reader_stopped", None)]
    assert book.open == [] and book.next_deadline() is None


def test_an_output_is_likely_for_the_newest_read_polled_within_two_windows():
    """What a panel-output record names: the newest read the panel polled (answered or still
    open) less than 2 x verdict_timeout_s before; none when there is none (the panel's own unlock)."""
    book = VerdictBook(T)
    assert book.polled_recently(0.0) is None
    book.sent(read("e1", b"\x01", 0.0))
    assert book.polled_recently(0.5) is None  # sent, not yet polled: the panel has not seen it
    book.delivered(b"\x01", 0, 0.6)
    assert book.polled_recently(0.7) == "e1"  # polled and open
    book.answer("GRANTED", GREEN, 0.8)  # the LED answers it; the output comes after
    assert book.polled_recently(0.9) == "e1"
    book.sent(read("e2", b"\x02", 1.0))
    book.delivered(b"\x02", 0, 1.1)
    assert book.polled_recently(1.2) == "e2"  # the newest
    assert book.polled_recently(1.1 + 2 * T - 0.01) == "e2"
    assert book.polled_recently(1.1 + 2 * T + 0.01) is None  # too long ago to be its grant


def test_an_output_right_after_a_refusal_is_not_likely_for_the_refused_read():
    """The panel refused e2 (red LED) and then unlocks the door (an operator, an exit button):
    that opening is not e2's; it is e1's (granted just before, its output late) or, with no
    grant near, the panel's own (None)."""
    red = {"command": "LED", "on_color": 1}
    book = VerdictBook(T)
    book.sent(read("e1", b"\x01", 0.0))
    book.delivered(b"\x01", 0, 0.1)
    book.answer("GRANTED", GREEN, 0.2)
    book.sent(read("e2", b"\x02", 0.3))
    book.delivered(b"\x02", 0, 0.4)
    book.answer("DENIED", red, 0.5)
    assert book.polled_recently(0.6) == "e1"
    assert book.polled_recently(0.1 + 2 * T + 0.01) is None  # e1 too long ago; e2 refused
