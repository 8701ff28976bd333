"""The scenario of test_osdp's deadlock test, run as a child process (``python -m
tests.access.overlap_scenario TMPDIR``) so that a deadlock ends this process, not the test run.
Prints one JSON line with what happened; exits 3 if the second card read never returned."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from facelink.access.osdp_pd import OsdpReader
from facelink.access.scbk import save_scbk
from facelink.access.wiegand import Credential
from tests.access.panel import KEY, Panel, open_pty, osdp, wait_until


def main(tmp: Path) -> int:
    save_scbk(tmp / "scbk", KEY)
    master, _slave, path = open_pty()
    panel = Panel(master, KEY)
    verdicts, answered = [], threading.Event()
    reader: OsdpReader | None = None

    def slow_record(v) -> None:  # the first read's NO_RESPONSE: the panel answers meanwhile
        verdicts.append([v.decision_event_id, v.verdict, v.overlaps, v.reason])
        if v.decision_event_id == "event-1":
            before = reader.state.commands
            panel.led(osdp.CommandLEDColor.Green)
            answered.set()
            wait_until(lambda: reader.state.commands > before, timeout=5)

    reader = OsdpReader(path, address=1, baud=9600, scbk_file=tmp / "scbk", install_mode=False,
                        debounce_s=0.0, verdict_timeout_s=10.0, on_verdict=slow_record)
    assert panel.secure() and wait_until(lambda: reader.secure)
    assert reader.card_read(Credential("H10301", 18, 1), "event-1")
    assert panel.next_event() is not None  # the panel has it and stays silent
    results: list[bool] = []
    sender = threading.Thread(target=lambda: results.append(
        reader.card_read(Credential("H10301", 18, 2), "event-2")), daemon=True)
    sender.start()
    sender.join(15)
    if sender.is_alive():
        print(json.dumps({"stuck": "card_read never returned: the reader deadlocked with libosdp"}), flush=True)
        os._exit(3)
    second = panel.next_event()
    answered.wait(15)
    wait_until(lambda: len(verdicts) == 2, timeout=15)
    third_sent = reader.card_read(Credential("H10301", 18, 3), "event-3")
    third = panel.next_event()
    panel.led(osdp.CommandLEDColor.Red)
    wait_until(lambda: len(verdicts) == 3, timeout=15)
    out = {"second_card_read": results[0], "second_event": list(second["data"]) if second else None,
           "verdicts": verdicts[:2], "third_sent": third_sent,
           "third_event": list(third["data"]) if third else None,
           "libosdp_queue_empty": reader._pd.command_queue.empty()}
    reader.close()
    panel.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
