"""`facelink fleet ...`: the desk's signing keys."""

from __future__ import annotations

from pathlib import Path

import click

from facelink.enroll.cli_base import cli, run

from .signing import generate_keypair


@cli.group("fleet")
def fleet() -> None:
    """Desk -> door trust: signing keys for exports."""


@fleet.command("keygen")
@click.option("--private-key", required=True, type=click.Path(path_type=Path), help="Written 0600; kept at the desk.")
@click.option("--public-key", required=True, type=click.Path(path_type=Path), help="Copied to every door (fleet.trusted_keys).")
def keygen(private_key: Path, public_key: Path) -> None:
    """Create the desk's Ed25519 signing key pair."""
    run(lambda: {"KeyId": generate_keypair(private_key, public_key), "PrivateKey": str(private_key),
                 "PublicKey": str(public_key)})
