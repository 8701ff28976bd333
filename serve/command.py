"""`facelink serve`: run the Rekognition-compatible endpoint (uvicorn, one process)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from facelink.enroll.cli_base import AppState, cli
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.errors import ConfigError, FaceLinkError, InvalidParameterException

from .limits import (
    DEFAULT_BODY_MEMORY_MIB,
    DEFAULT_BODY_MEMORY_PER_CLIENT_MIB,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    default_max_connections,
)

log = logging.getLogger(__name__)


@cli.command("serve")
@click.option("--credentials", required=True, type=click.Path(path_type=Path),
              help="TOML file of access keys (mode 0600): [keys.<AccessKeyId>] secret, read_only, collections.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless you say so).")
@click.option("--port", type=int, default=8443, show_default=True)
@click.option("--tls-cert", type=click.Path(path_type=Path), default=None, help="PEM certificate: serve HTTPS.")
@click.option("--tls-key", type=click.Path(path_type=Path), default=None, help="PEM private key of --tls-cert.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Operations run at once (each has its own database connection and engine).")
@click.option("--insecure-http", is_flag=True, help="Allow plain HTTP on a non-loopback address (not recommended).")
@click.option("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT, show_default=True,
              help="Seconds a connection may take to send a request head (after opening or after a response); then it is closed.")
@click.option("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT, show_default=True,
              help="Seconds a request body may take to arrive; then RequestTimeoutException (408).")
@click.option("--body-memory-mib", type=int, default=DEFAULT_BODY_MEMORY_MIB, show_default=True,
              help="MiB of request bodies read or processed at once, all requests together; "
                   "a request that would go over is ThrottlingException (503).")
@click.option("--body-memory-per-client-mib", type=int, default=DEFAULT_BODY_MEMORY_PER_CLIENT_MIB,
              show_default=True,
              help="MiB of request bodies one client (an IPv4 address, an IPv6 /64) may have read or "
                   "processed at once (at most --body-memory-mib); a request that would go over is "
                   "ThrottlingException (503). Behind a reverse proxy every request comes from the "
                   "proxy: set it to --body-memory-mib there.")
@click.option("--max-connections", type=int, default=None,
              help="Connections held at once; one more is closed unread. Default: the open-file limit "
                   "(ulimit -n) less 128 kept for the store and the models.")
@click.option("--max-connections-per-client", type=int, default=DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
              show_default=True,
              help="Connections one client (an IPv4 address, an IPv6 /64) may hold at once (at most "
                   "--max-connections); one more is closed unread. Behind a reverse proxy every "
                   "connection comes from the proxy: set it to --max-connections there.")
@click.pass_obj
def serve_command(state: AppState, credentials: Path, host: str, port: int, tls_cert: Path | None,
                  tls_key: Path | None, workers: int, insecure_http: bool, header_timeout: float,
                  body_timeout: float, body_memory_mib: int, body_memory_per_client_mib: int,
                  max_connections: int | None, max_connections_per_client: int) -> None:
    """Serve Rekognition's API (JSON 1.1, SigV4) for boto3, the aws CLI and AWS SDKs."""
    import json

    try:
        server = build_server(state, credentials, host, port, tls_cert, tls_key, workers, insecure_http,
                              body_timeout, body_memory_mib, header_timeout, max_connections,
                              max_connections_per_client, body_memory_per_client_mib)
    except FaceLinkError as exc:
        click.echo(json.dumps(exc.to_json()), err=True)
        sys.exit(exc.exit_code)
    server.run()


def build_server(state: AppState, credentials: Path, host: str, port: int, tls_cert: Path | None,
                 tls_key: Path | None, workers: int, insecure_http: bool,
                 body_timeout: float = DEFAULT_BODY_TIMEOUT,
                 body_memory_mib: int = DEFAULT_BODY_MEMORY_MIB, header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                 max_connections: int | None = None,
                 max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
                 body_memory_per_client_mib: int = DEFAULT_BODY_MEMORY_PER_CLIENT_MIB):
    import math

    import uvicorn

    from .app import MAX_BODY, RekognitionApp
    from .credentials import load_keys
    from .protocol import with_header_deadline

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    for p in (tls_cert, tls_key):
        if p is not None and not p.is_file():
            raise ConfigError(f"TLS file not found: {p}")
    if tls_cert is None and host not in ("127.0.0.1", "::1", "localhost") and not insecure_http:
        raise ConfigError(f"refusing plain HTTP on {host}: give --tls-cert/--tls-key (or --insecure-http)")
    if not 1 <= workers <= 64 or not 0 <= port <= 65535:
        raise InvalidParameterException("--workers must be 1-64 and --port 0-65535")
    min_mib = math.ceil(MAX_BODY / 2**20)
    if not 0 < header_timeout <= 3600:
        raise InvalidParameterException("--header-timeout must be more than 0 and at most 3600 seconds")
    if not 0 < body_timeout <= 3600:
        raise InvalidParameterException("--body-timeout must be more than 0 and at most 3600 seconds")
    if max_connections is None:
        max_connections = default_max_connections()
    if not 1 <= max_connections <= 1 << 20:
        raise InvalidParameterException(f"--max-connections must be from 1 to {1 << 20}")
    if not 1 <= max_connections_per_client <= 1 << 20:
        raise InvalidParameterException(f"--max-connections-per-client must be from 1 to {1 << 20}")
    per_client = min(max_connections_per_client, max_connections)
    if not min_mib <= body_memory_mib <= 1 << 20:
        raise InvalidParameterException(f"--body-memory-mib must be at least {min_mib} (one largest request)")
    if not min_mib <= body_memory_per_client_mib <= 1 << 20:
        raise InvalidParameterException(f"--body-memory-per-client-mib must be at least {min_mib} (one largest request)")
    keys = load_keys(credentials)
    settings = state.settings
    from facelink.models.engine import FaceEngine

    models = settings.models.model_copy(update={"threads": 1}) if workers > 1 else settings.models

    def make_context() -> Context:
        return Context(Store(settings.store.database), lambda: FaceEngine.from_settings(models),
                       keep_thumbnails=settings.store.keep_thumbnails, models_dir=settings.models.models_dir)

    app = RekognitionApp(keys, make_context, workers, body_timeout=body_timeout,
                         max_body_bytes_in_flight=body_memory_mib * 2**20,
                         max_body_bytes_per_client=body_memory_per_client_mib * 2**20)
    tls = None
    if tls_cert is not None:  # the handshake is FaceLink's (serve/protocol.py), so it is counted and timed
        import ssl

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(str(tls_cert), str(tls_key))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"cannot load --tls-cert/--tls-key: {exc}") from exc
    # ws="none": the API has no WebSockets, and an upgrade hands the connection to uvicorn's
    # WebSocket protocol, whose close never gives its client's place back
    # (--max-connections-per-client): ~64 upgrade requests locked a client out until a restart
    config = uvicorn.Config(app, host=host, port=port, lifespan="off", ws="none",
                            http=with_header_deadline(header_timeout, max_connections, tls, per_client),
                            log_level="info",
                            server_header=False, timeout_graceful_shutdown=5)
    # uvicorn's own line says http:// (it is given no certificate: the handshake is ours); this one
    # goes through uvicorn's logger, which is the one `facelink serve` shows at INFO
    logging.getLogger("uvicorn.error").info(
        "FaceLink serving %d key(s) on %s://%s:%d (at most %d connections, %d from one client; "
        "%d MiB of request bodies, %d MiB from one client)", len(keys), "https" if tls_cert else "http", host, port,
        max_connections, per_client, body_memory_mib, min(body_memory_per_client_mib, body_memory_mib))
    return uvicorn.Server(config)
