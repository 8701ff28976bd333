"""Fixtures: a pty pair and libosdp Control Panels that are torn down after each test."""

from __future__ import annotations

import os

import pytest

from .panel import Panel, drain_line, open_pty


@pytest.fixture()
def pty_pair():
    master, slave, path = open_pty()
    yield master, path
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture()
def panels():
    made: list[Panel] = []

    def make(master: int, scbk: bytes | None, enforce: bool = True) -> Panel:
        if any(m.closed for m in made):  # a panel left this line: the next one starts on a quiet line
            drain_line(master)
        p = Panel(master, scbk, enforce)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
