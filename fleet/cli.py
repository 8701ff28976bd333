"""`facelink fleet ...`: the desk's signing keys, the collection publisher and the fleet's status."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

import click

from facelink.enroll.cli_base import AppState, cli, run
from facelink.errors import ConfigError, FaceLinkError

from .signing import generate_keypair

EX_CONFIG = 78


@cli.group("fleet")
def fleet() -> None:
    """Desk -> door trust and collection sync: signing keys, `publish`, `acl`, `status`, `accept-restore`."""


@fleet.command("keygen")
@click.option("--private-key", required=True, type=click.Path(path_type=Path), help="Written 0600; kept at the desk.")
@click.option("--public-key", required=True, type=click.Path(path_type=Path), help="Copied to every door (fleet.trusted_keys).")
def keygen(private_key: Path, public_key: Path) -> None:
    """Create the desk's Ed25519 signing key pair."""
    run(lambda: {"KeyId": generate_keypair(private_key, public_key), "PrivateKey": str(private_key),
                 "PublicKey": str(public_key)})


@fleet.command("publish")
@click.pass_obj
def publish(state: AppState) -> None:
    """Long-running desk service: send every change of the collections in `fleet.publish` to the
    doors as signed change sets over MQTT ([mqtt]), answer their sync requests. Stops on SIGTERM /
    SIGINT; exit 78 on a configuration problem."""
    from .publisher import serve

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        settings = state.settings
        logging.getLogger().setLevel(settings.logging.level)  # the group set up the handler
        serve(settings, stop)
    except FaceLinkError as exc:
        click.echo(json.dumps(exc.to_json()), err=True)
        sys.exit(EX_CONFIG if isinstance(exc, ConfigError) else exc.exit_code)


@fleet.command("acl")
@click.option("--desk-user", default=None, help="The desk's MQTT user name (default: mqtt.username, else facelink-desk).")
@click.option("--logger-user", default="facelink-logger", show_default=True,
              help="The audit logger's MQTT user name ('' for none).")
@click.pass_obj
def acl(state: AppState, desk_user: str | None, logger_user: str) -> None:
    """Print the mosquitto acl_file for the desk, the audit logger and the doors of fleet.doors,
    each door reading only its collections: every rule names its user (no `pattern` lines, which
    would make any broker account a door)."""
    from .acl import broker_acl

    try:
        s = state.settings
        click.echo(broker_acl(s.mqtt.topic_prefix, s.fleet.doors, desk_user or s.mqtt.username, logger_user or None,
                              s.fleet.accept_shared_request_topic), nl=False)
    except FaceLinkError as exc:
        click.echo(json.dumps(exc.to_json()), err=True)
        sys.exit(exc.exit_code)


@fleet.command("status")
@click.option("--deadline-s", type=click.FloatRange(0.5, 3600), default=None,
              help="How long to listen (default: one door health period, mqtt.health_interval_s, + 2 s).")
@click.pass_obj
def status(state: AppState, deadline_s: float | None) -> None:
    """Every door seen on the broker: online/offline, last seen, the seq it applied per collection
    against the desk's head, its outbox depth (JSON)."""
    from .status import collect

    run(lambda: collect(state.settings, deadline_s if deadline_s is not None
                        else state.settings.mqtt.health_interval_s + 2))


@fleet.command("accept-restore")
@click.option("--collection", "collection_id", required=True, help="The collection the desk holds (RESTORED).")
@click.pass_obj
def accept_restore(state: AppState, collection_id: str) -> None:
    """After the desk database was restored from an older backup, the desk holds the collection
    (publishes nothing: `facelink fleet status` shows it RESTORED with the lost seqs). Once the
    changes made after the backup are made again (deletions, revocations), this lets the desk go
    on: it journals past the lost seqs, and every door holding them takes its snapshot."""
    from facelink.errors import ResourceNotFoundException

    from .journal import Journal

    def accept() -> dict:
        db = state.settings.store.database
        if not db.is_file():
            raise ResourceNotFoundException(f"no desk database at {db}")
        journal = Journal(db, group_access=state.settings.store.group_access)
        try:
            r = journal.accept_restore(collection_id)
        finally:
            journal.close()
        return {"CollectionId": collection_id, "LostSeqs": list(r.lost), "AcceptedAt": r.accepted_at,
                "Next": f"the desk (`facelink fleet publish`) journals empty change sets through seq "
                        f"{r.evidence_seq + 1} and publishes again; doors holding the lost seqs are DIVERGED "
                        "and take its snapshot"}

    run(accept)
