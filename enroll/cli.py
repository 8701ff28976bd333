"""`facelink`: the security desk's CLI, mirroring `aws rekognition` subcommands and flags.

A thin click layer: each command parses its flags, calls one API function and prints its JSON.
Failures print ``{"__type": ..., "Message": ...}`` on stderr and exit with the error's code
(README: "Errors and exit codes"). Commands live in cli_collections and cli_tools.
"""

from __future__ import annotations

from facelink.fleet import cli as _fleet_cli  # noqa: F401 - registers `facelink fleet`
from facelink.serve import command as _serve  # noqa: F401 - registers `facelink serve`

from . import cli_collections, cli_credentials, cli_tools  # noqa: F401 - importing registers their commands
from .cli_base import cli, main

__all__ = ["cli", "main"]


if __name__ == "__main__":
    main()
