"""The scenario of test_osdp's command-fault test, run as a child process (``python -m
tests.access.command_fault_scenario TMPDIR``): an exception while FaceLink takes a panel command
would escape into libosdp's binding, which then crashes the whole process (a segfault, not an
exception). Prints one JSON line and exits 0 if the reader survived it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from facelink.access.osdp_pd import OsdpReader
from facelink.access.scbk import save_scbk
from tests.access.panel import KEY, Panel, open_pty, wait_until


class BrokenInbox:
    """The verdict thread's queue failing (memory exhausted, say) as a command comes in."""

    def __init__(self) -> None:
        self.calls = 0

    def put(self, item) -> None:
        self.calls += 1
        raise MemoryError("simulated: the command cannot be queued")


def main(tmp: Path) -> int:
    save_scbk(tmp / "scbk", KEY)
    master, _slave, path = open_pty()
    panel = Panel(master, KEY)
    reader = OsdpReader(path, address=1, baud=9600, scbk_file=tmp / "scbk", install_mode=False)
    assert panel.secure() and wait_until(lambda: reader.secure)
    inbox, broken = reader._inbox, BrokenInbox()
    reader._inbox = broken  # what the command callback hands commands to
    panel.buzzer()
    took = wait_until(lambda: broken.calls >= 1, timeout=15)
    reader._inbox = inbox
    alive = wait_until(lambda: reader.state.commands >= 1, timeout=5)
    reader.close()
    panel.close()
    print(json.dumps({"command_reached_facelink": took, "alive": alive}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
