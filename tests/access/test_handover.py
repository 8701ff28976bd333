"""access/handover.py: the OSDP reader's verdicts and openings are handed on in order, one
failing item stops none after it, and close() waits while the consumer makes progress."""

from __future__ import annotations

import threading

from facelink.access.handover import HandOver


def _started(h: HandOver[int], items) -> HandOver[int]:
    """``h`` started with ``items`` put and finished."""
    h.start()
    for i in items:
        h.put(i)
    h.finish()
    return h


def test_items_are_handled_in_order_and_a_failing_one_stops_none_after_it(caplog):
    got: list[int] = []

    def handle(i: int) -> None:
        if i == 2:
            raise OSError("disk full")
        got.append(i)

    h = _started(HandOver[int]("t-order", handle, "cannot handle it"), range(5))
    assert h.wait_done(10)
    assert got == [0, 1, 3, 4] and h.handed == 5
    assert [r.getMessage() for r in caplog.records if r.exc_info] == ["cannot handle it"]


def test_wait_done_gives_up_on_a_stalled_item_and_not_before_the_rest_are_handled():
    """An item that never finishes: wait_done returns False after one wait without progress, the
    items before it handled; once it finishes, wait_done returns True with every item handled.
    (That close() keeps waiting while each of several slow items makes progress is
    test_osdp.py::test_close_waits_for_a_slow_recorder_while_it_makes_progress.)"""
    stall, reached = threading.Event(), threading.Event()

    def handle(i: int) -> None:
        if i == 2:
            reached.set()
            stall.wait(30)

    h = _started(HandOver[int]("t-stall", handle, "failed"), range(3))
    assert reached.wait(10)
    assert not h.wait_done(0.2)
    assert h.handed == 2 and h.thread.is_alive()
    stall.set()
    assert h.wait_done(10) and h.handed == 3


def test_running_here_is_true_on_its_own_thread_only():
    seen: list[bool] = []
    h = _started(HandOver[int]("t-here", lambda _: seen.append(h.running_here()), "failed"), [1])
    assert h.wait_done(10) and seen == [True] and not h.running_here()
