"""`facelink-logger`: subscribe to every door's decisions and keep an audit log.

Records go to a SQLite database (deduplicated by event id: MQTT QoS 1 is at-least-once) and,
optionally, a JSONL file. A persistent session (fixed client id, clean_session=False) means the
broker keeps QoS 1 decisions for the logger while it is down. `facelink-logger query` answers
"who came through which door when".
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("facelink.logger")

SCHEMA = """CREATE TABLE IF NOT EXISTS decisions(
    event_id TEXT PRIMARY KEY, timestamp TEXT NOT NULL, device_id TEXT, decision TEXT NOT NULL,
    user_id TEXT, external_image_id TEXT, similarity REAL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_user ON decisions(user_id, timestamp);
CREATE INDEX IF NOT EXISTS decisions_device ON decisions(device_id, timestamp);"""


class AuditLog:
    def __init__(self, path: Path, jsonl: Path | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.executescript(SCHEMA)
        self._jsonl = jsonl
        self._lock = threading.Lock()

    def record(self, payload: dict[str, Any]) -> bool:
        """True when new; False for a duplicate event id (redelivery)."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO decisions VALUES (?,?,?,?,?,?,?,?)",
                (payload["event_id"], payload.get("timestamp", ""), payload.get("device_id"),
                 payload["decision"], payload.get("user_id"), payload.get("external_image_id"),
                 payload.get("similarity"), json.dumps(payload)))
            new = cur.rowcount == 1
            if new and self._jsonl is not None:
                with open(self._jsonl, "a") as f:
                    f.write(json.dumps(payload) + "\n")
        return new

    def query(self, user: str | None = None, device: str | None = None, since: str | None = None,
              until: str | None = None, decision: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT payload FROM decisions WHERE 1=1", []
        for col, op, val in (("user_id", "=", user), ("device_id", "=", device), ("timestamp", ">=", since),
                             ("timestamp", "<=", until), ("decision", "=", decision)):
            if val is not None:
                sql += f" AND {col} {op} ?"
                params.append(val)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY timestamp", params).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        self._conn.close()


def subscribe(audit: AuditLog, host: str, port: int, prefix: str, client_id: str,
              stop: threading.Event, username: str | None = None, password: str | None = None) -> None:
    import paho.mqtt.client as mqtt

    topic = f"{prefix.rstrip('/')}/+/decision"

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the logger: %s", reason_code)
            return
        client.subscribe(topic, qos=1)
        log.info("logging decisions from %s on %s:%d", topic, host, port)

    def on_message(client, userdata, msg):
        try:
            payload = json.loads(msg.payload)
            if audit.record(payload):
                print(json.dumps(payload), flush=True)
        except (ValueError, KeyError) as exc:
            log.warning("ignored a malformed message on %s: %s", msg.topic, exc)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    if username:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(1, 30)
    client.connect_async(host, port, keepalive=30)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facelink-logger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=Path("facelink-audit.db"), help="audit database")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="subscribe and record decisions")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=1883)
    run.add_argument("--prefix", default="facelink")
    run.add_argument("--client-id", default="facelink-logger")
    run.add_argument("--username")
    run.add_argument("--password")
    run.add_argument("--jsonl", type=Path, default=None, help="also append every decision to this file")
    q = sub.add_parser("query", help="print recorded decisions as JSON lines")
    q.add_argument("--user")
    q.add_argument("--door", help="device id")
    q.add_argument("--since", help="ISO-8601 timestamp")
    q.add_argument("--until", help="ISO-8601 timestamp")
    q.add_argument("--decision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    audit = AuditLog(args.db, getattr(args, "jsonl", None))
    try:
        if args.command == "query":
            for row in audit.query(args.user, args.door, args.since, args.until, args.decision):
                print(json.dumps(row))
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        subscribe(audit, args.host, args.port, args.prefix, args.client_id, stop, args.username, args.password)
        return 0
    finally:
        audit.close()


if __name__ == "__main__":
    sys.exit(main())
