"""A door command whose thread cannot start must not break the daemon's shutdown (found in review).

CommandRelay.pulse() put the thread in ``_running`` before starting it; when the start failed
(``RuntimeError: can't start new thread``) the error went to the caller (ACTUATION_FAILED, right)
but the never-started thread stayed in ``_running``, and close() -- the daemon's shutdown --
raised joining it ("cannot join thread before it is started"): no outbox flush, no last health,
no ``offline``. The real CommandRelay; only the thread start is made to fail."""

from __future__ import annotations

import threading

import pytest

from facelink.device.door import CommandRelay


def test_a_command_thread_that_cannot_start_leaves_close_working(tmp_path, monkeypatch):
    relay = CommandRelay(f"touch {tmp_path / 'ran'}", 1.0)
    real_start = threading.Thread.start

    def no_thread(self) -> None:
        if self.name == "door-command":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        relay.pulse("emp-7")  # the daemon reports it (ACTUATION_FAILED)
    monkeypatch.setattr(threading.Thread, "start", real_start)
    relay.close()  # raised RuntimeError: cannot join thread before it is started
    assert not (tmp_path / "ran").exists()
