"""`facelink-logger`: subscribe to every door's decisions and keep the audit log.

It uses the same MQTT client and the same settings as the door ([mqtt]: host, port, TLS, client
certificates, username and password from the config file or FACELINK_MQTT__* variables — never
from the command line) plus [audit] (database, jsonl, client_id). Every message is untrusted:
valid decisions are recorded once per event id, anything else goes to the quarantine table
(`facelink-logger quarantine` lists it) and is acknowledged. A persistent session (fixed client
id, clean_session=False) means the broker keeps QoS 1 decisions for the logger while it is down.
A message is acknowledged only once it is stored (recorded or quarantined): while the database
cannot store (another writer past the 5-second wait, disk full, an I/O error) messages stay
unacknowledged at the broker, and it sends them again once the database stores again.
`facelink-logger query` answers "who came through which door when"; `facelink-logger gaps`
lists the numbers of the doors' events it never received (each door numbers what it records).

`facelink-logger acknowledge` records a security manager's sign-off of numbers found missing (or
given twice) after investigating them: `gaps` then no longer counts them (`gaps --all` lists them,
marked); nothing is deleted, and a number lost or given twice later counts again.

Exit codes: 0 stopped (or done), 1 `gaps` found events never received (or numbers given twice)
not signed off with `acknowledge`, 2 usage, 65 `acknowledge` refused (one line saying why; nothing recorded), 75
`acknowledge` not recorded: the database could not be written now (busy: try again; read-only), 78
configuration problem (one line naming the key).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from facelink.config import Settings, load_settings
from facelink.errors import ConfigError
from facelink.mqtt.client import MqttClient
from facelink.mqtt.topics import all_alarms, all_decisions, all_panel_verdicts

from .intake import Intake, requeue
from .store import AuditLog, Refused, Unwritable

log = logging.getLogger("facelink.logger")

EX_DATAERR = 65  # acknowledge refused
EX_TEMPFAIL = 75  # acknowledge not recorded: the database could not be written now (busy, read-only)
EX_CONFIG = 78


RETRY_HELD_S = 2.0  # while the database cannot store: how often the first message held is tried again


def subscribe(audit: AuditLog, settings: Settings, stop: threading.Event) -> Intake:
    """Record decisions from the broker until ``stop`` is set. A message is acknowledged only once
    it is stored (recorded or quarantined): while the database cannot store, messages stay at the
    broker, and once it stores again the session reconnects and the broker sends them again."""
    intake = Intake(audit, on_new=lambda p: print(json.dumps(p), flush=True))
    client = MqttClient(settings.mqtt, client_id=settings.audit.client_id, clean_session=False,
                        subscriptions=[all_decisions(settings.mqtt.topic_prefix),
                                       all_panel_verdicts(settings.mqtt.topic_prefix),
                                       all_alarms(settings.mqtt.topic_prefix)],
                        on_message=intake.handle, ack_when_handled=True)
    log.info("logging decisions from %s on %s:%d", all_decisions(settings.mqtt.topic_prefix),
             settings.mqtt.host, settings.mqtt.port)
    try:
        while not stop.wait(RETRY_HELD_S):
            if intake.holding and intake.retry_held() and not stop.is_set():
                client.redeliver()  # the unacknowledged messages, sent again on the new connection
    finally:
        client.stop()  # acknowledges nothing more: what was not stored stays at the broker
    return intake


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facelink-logger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="settings file (TOML), as for the door")
    parser.add_argument("--db", type=Path, default=None, help="audit database (overrides audit.database)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="subscribe and record decisions")
    run.add_argument("--host", help="overrides mqtt.host")
    run.add_argument("--port", type=int, help="overrides mqtt.port")
    run.add_argument("--prefix", help="overrides mqtt.topic_prefix")
    run.add_argument("--client-id", help="overrides audit.client_id")
    run.add_argument("--jsonl", type=Path, default=None, help="overrides audit.jsonl")
    q = sub.add_parser("query", help="print recorded decisions as JSON lines")
    q.add_argument("--user")
    q.add_argument("--door", help="device id")
    q.add_argument("--since", help="ISO-8601 timestamp")
    q.add_argument("--until", help="ISO-8601 timestamp")
    q.add_argument("--decision")
    qa = sub.add_parser("alarms", help="print the doors' sync alarms (refused change sets) as JSON lines")
    qa.add_argument("--since", help="ISO-8601 timestamp")
    qa.add_argument("--door", help="device id")
    qo = sub.add_parser("openings", help="print the openings access panels commanded (OSDP output on) and their "
                                         "output offs (relay ended / not_ended / left_running / off_failed) as JSON lines")
    qo.add_argument("--since", help="ISO-8601 timestamp")
    qo.add_argument("--door", help="device id")
    qq = sub.add_parser("quarantine", help="print quarantined messages (time, topic, size, reason)")
    qq.add_argument("--since", help="ISO-8601 timestamp")
    qg = sub.add_parser("gaps", help="print, as JSON lines, the numbers of each door's events this log never "
                                     "received (dropped by a full outbox, or lost on the way); exit 1 if any not signed off with acknowledge")
    qg.add_argument("--door", help="device id")
    qg.add_argument("--after-first", action="store_true",
                    help="leave out numbers before each stream's first received one (a log started after the doors)")
    qg.add_argument("--all", action="store_true",
                    help="also list the numbers a security manager acknowledged (marked \"acknowledged\"; "
                         "they never make the exit status 1)")
    qk = sub.add_parser("acknowledge", help="sign off numbers of a door's outbox stream found missing (--missing) "
                                            "or given to two events (--reused), after investigating them: gaps "
                                            "no longer counts them; recorded with who, when and why, never deleted")
    qk.add_argument("--door", required=True, help="device id")
    qk.add_argument("--stream", required=True, help="the outbox stream id (facelink-logger streams, gaps)")
    qk.add_argument("--missing", action="append", default=[], metavar="FIRST[-LAST]",
                    help="numbers never received, every one of them missing now (repeatable)")
    qk.add_argument("--reused", action="append", default=[], metavar="FIRST[-LAST]",
                    help="numbers given to two events, every one of them (repeatable)")
    qk.add_argument("--by", required=True, help="who signs off (name or staff id)")
    qk.add_argument("--reason", required=True, help="why: what the investigation found")
    qn = sub.add_parser("acknowledgments", help="print every sign-off (acknowledge) as JSON lines")
    qn.add_argument("--door", help="device id")
    qs = sub.add_parser("streams", help="print each door's outbox streams as received (first, last, received, "
                                        "missing) as JSON lines")
    qs.add_argument("--door", help="device id")
    sub.add_parser("requeue", help="record the quarantined messages this logger now accepts (e.g. events of "
                                   "doors upgraded before the logger) and take them out of the quarantine")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"host": getattr(args, "host", None), "port": getattr(args, "port", None),
                 "topic_prefix": getattr(args, "prefix", None)}
    mqtt = {k: v for k, v in overrides.items() if v is not None}
    audit = {k: v for k, v in {"database": args.db, "jsonl": getattr(args, "jsonl", None),
                               "client_id": getattr(args, "client_id", None)}.items() if v is not None}
    settings = load_settings(args.config)
    if mqtt or audit:  # re-validate with the overrides so they get the same checks as the file
        settings = load_settings(args.config, **{
            **({"mqtt": {**settings.mqtt.model_dump(), **mqtt}} if mqtt else {}),
            **({"audit": {**settings.audit.model_dump(), **audit}} if audit else {})})
    return settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"facelink-logger: {exc.message}", file=sys.stderr)
        return EX_CONFIG
    logging.basicConfig(level=settings.logging.level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        audit = AuditLog(settings.audit.database, settings.audit.jsonl, group=settings.store.group_access)
    except ConfigError as exc:
        print(f"facelink-logger: {exc.message}", file=sys.stderr)
        return EX_CONFIG
    try:
        if args.command == "query":
            for row in audit.query(args.user, args.door, args.since, args.until, args.decision):
                print(json.dumps(row))
            return 0
        if args.command == "alarms":
            for row in audit.alarms(args.since, args.door):
                print(json.dumps(row))
            return 0
        if args.command == "openings":
            for row in audit.panel_outputs(args.since, args.door):
                print(json.dumps(row))
            return 0
        if args.command == "gaps":
            gaps = audit.gaps(args.door, after_first=args.after_first, acknowledged=args.all)
            for gap in gaps:
                print(json.dumps(gap))
            streams = audit.streams(args.door)
            reused = [stream for stream in streams if stream["reused"]]  # not acknowledged
            for stream in reused:  # said (found in review 88: exit 1 with nothing printed)
                print(f"door {stream['device_id']}: {stream['reused']} number(s) of its outbox "
                      f"{stream['event_stream']} given to two events (an outbox restored from a copy?): "
                      "see facelink-logger streams", file=sys.stderr)
            if args.all:
                for stream in streams:
                    if stream["acknowledged_reused"]:
                        print(f"door {stream['device_id']}: {stream['acknowledged_reused']} number(s) of its "
                              f"outbox {stream['event_stream']} given to two events, acknowledged: see "
                              "facelink-logger acknowledgments", file=sys.stderr)
            return 1 if reused or any("acknowledged" not in gap for gap in gaps) else 0
        if args.command == "acknowledge":
            try:
                made = audit.acknowledge(args.door, args.stream, by=args.by, reason=args.reason,
                                         missing=args.missing, reused=args.reused)
            except Refused as exc:
                print(f"facelink-logger: acknowledge refused, nothing recorded: {exc}", file=sys.stderr)
                return EX_DATAERR
            except Unwritable as exc:  # found in review 94: a traceback (the running logger writing)
                print(f"facelink-logger: acknowledge not recorded, nothing recorded: {exc}", file=sys.stderr)
                return EX_TEMPFAIL
            for ack in made:
                print(json.dumps(ack))
            return 0
        if args.command == "acknowledgments":
            for ack in audit.acknowledgments(args.door):
                print(json.dumps(ack))
            return 0
        if args.command == "streams":
            for stream in audit.streams(args.door):
                print(json.dumps(stream))
            return 0
        if args.command == "requeue":
            recorded, left = requeue(audit)
            print(json.dumps({"recorded": recorded, "left_in_quarantine": left}))
            return 0
        if args.command == "quarantine":
            for q in audit.quarantined(args.since):
                print(json.dumps({"id": q.id, "received_at": q.received_at, "topic": q.topic,
                                  "size": q.size, "reason": q.reason}))
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            intake = subscribe(audit, settings, stop)
        except ConfigError as exc:
            log.error("cannot start: %s", exc.message)
            return EX_CONFIG
        log.info("stopped: %d decisions recorded, %d messages quarantined", intake.recorded,
                 intake.quarantined)
        return 0
    finally:
        audit.close()


if __name__ == "__main__":
    sys.exit(main())
