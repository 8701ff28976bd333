"""Store-and-forward drain: how long a door takes to empty its outbox after an outage.

Fills a real outbox (SQLite, synchronous=FULL) with real decision payloads (facelink.decision/1),
starts a private mosquitto on loopback and drains the outbox with the door's own pump and client,
directly and through a TCP proxy that adds a 50 ms round trip (tools/delay_proxy.py, SIMULATED
long link), with the publish window of the old behaviour (1: wait for each PUBACK) beside the new
default, in one run. A subscriber checks that every event arrived, in order, none missing.

    python tools/bench_drain.py [--events 10000] [--window 100] [--slow-events 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from broker import Broker
from delay_proxy import DelayProxy

from facelink.config import MqttSettings
from facelink.device.decision import GRANTED, Decision
from facelink.mqtt.client import MqttClient
from facelink.mqtt.outbox import Outbox
from facelink.mqtt.pump import OutboxPump
from facelink.mqtt.topics import DeviceTopics, all_decisions

# The broker as README configures it for the audit logger: the subscriber here stands in for the
# logger, and mosquitto's default queue of 1,000 messages a session drops what a subscriber slower
# than the drain has not taken yet (the door deleted it on the PUBACK: the logger would lose it).
LOGGER_BROKER = "max_queued_messages 1000000\n"


class Subscriber:
    def __init__(self, port: int, expected: int) -> None:
        self.ids: list[str] = []
        self.expected = expected
        self.done = threading.Event()
        self._lock = threading.Lock()
        self.client = MqttClient(MqttSettings(port=port), client_id=f"bench-sub-{time.monotonic_ns()}",
                                 subscriptions=[all_decisions("facelink")], on_message=self._on)
        assert self.client.wait_connected(30)

    def _on(self, topic: str, payload: bytes) -> None:
        import json

        event_id = json.loads(payload).get("event_id", "")
        with self._lock:
            self.ids.append(event_id)
            if len(set(self.ids)) >= self.expected:
                self.done.set()


def run(work: Path, broker_port: int, n: int, window: int, rtt_ms: float) -> dict:
    outbox = Outbox(work / f"outbox-{window}-{rtt_ms:.0f}-{n}.db")
    topic = DeviceTopics("facelink", "bench-door").decision
    sent = []
    for i in range(n):
        d = Decision(GRANTED, "bench-door", "staff", "m/1", 99.0, user_id=f"emp-{i % 500:04d}",
                     similarity=99.7, track_id=i)
        outbox.put(d.event_id, topic, d.payload())
        sent.append(d.event_id)
    proxy = None
    port = broker_port
    if rtt_ms:
        proxy = DelayProxy(broker_port, delay_up_s=rtt_ms / 2000, delay_down_s=rtt_ms / 2000).start()
        port = proxy.port
    sub = Subscriber(broker_port, n)
    time.sleep(0.5)  # benchmark only: the subscription settles (the tests use a probe barrier)
    client = MqttClient(MqttSettings(port=port, device_id="bench-door", publish_window=window),
                        client_id=f"bench-door-{window}-{rtt_ms:.0f}")
    assert client.wait_connected(30)
    started = time.monotonic()
    pump = OutboxPump(outbox, client, window=window).start()
    finished = sub.done.wait(3600)
    while len(outbox):  # the last PUBACKs come after the last message reached the subscriber
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    pump.close(5)
    client.stop()
    sub.client.stop()
    if proxy is not None:
        proxy.stop()
    firsts = list(dict.fromkeys(sub.ids))
    return {"events": n, "window": window, "rtt_ms": rtt_ms, "seconds": round(elapsed, 2),
            "per_s": round(n / elapsed), "all_arrived": finished and set(firsts) == set(sent),
            "in_order": firsts == sent, "duplicates": len(sub.ids) - len(firsts), "left_in_outbox": len(outbox)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--slow-events", type=int, default=500,
                        help="events for window 1 through the 50 ms link (10,000 would take ~10 minutes)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Broker(Path(tmp) / "broker", mosquitto_extra=LOGGER_BROKER) as broker:
        for n, window, rtt in ((args.events, 1, 0.0), (args.events, args.window, 0.0),
                               (args.slow_events, 1, 50.0), (args.events, args.window, 50.0)):
            rows.append(run(Path(tmp), broker.port, n, window, rtt))
            print(rows[-1], flush=True)
    load_after = os.getloadavg()
    print(f"\nOutbox drain to a local mosquitto; {platform.machine()} {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; {datetime.now(timezone.utc).date()}; load average "
          f"{load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} before, "
          f"{load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} after\n")
    print("| link | window | events | drained in | events/s | all arrived, in order | duplicates |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        link = "loopback" if not r["rtt_ms"] else f"+{r['rtt_ms']:.0f} ms RTT (simulated, delay proxy)"
        print(f"| {link} | {r['window']} | {r['events']:,} | {r['seconds']} s | {r['per_s']:,} | "
              f"{'yes' if r['all_arrived'] and r['in_order'] else 'NO'} | {r['duplicates']} |")
    return 0 if all(r["all_arrived"] and r["in_order"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
