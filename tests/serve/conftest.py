"""A real `facelink serve` process on a free loopback port, and real boto3 clients for it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

KEYS = {
    "AKIAFACELINKADMIN01": ("admin-secret-0123456789", "requests_per_second = 100000\n"),
    "AKIAFACELINKREADER1": ("reader-secret-0123456789", "read_only = true\n"),
    "AKIAFACELINKLOBBY01": ("lobby-secret-0123456789", 'collections = ["lobby"]\n'),
    "AKIAFACELINKSLOW001": ("slow-secret-01234567890", "requests_per_second = 0.0001\n"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(tmp: Path, models_dir: Path, *args: str):
    """A real `facelink serve` (with ``args``) on a free loopback port, keys KEYS, database in
    ``tmp``: yields (url, env), env being the environment its CLI twin uses (same database)."""
    creds = tmp / "keys.toml"
    creds.write_text("".join(f'[keys.{k}]\nsecret = "{s}"\n{extra}\n' for k, (s, extra) in KEYS.items()))
    creds.chmod(0o600)
    env = {**os.environ, "FACELINK_STORE__DATABASE": str(tmp / "serve.db"),
           "FACELINK_MODELS__MODELS_DIR": str(models_dir)}
    port = free_port()
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "facelink.enroll.cli", "serve", "--credentials", str(creds),
                             "--port", str(port), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"facelink serve did not start: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, models_dir):
    """(url, env, tmp): the server, the environment its CLI twin uses (same database), its folder
    (serve.log: what it logged)."""
    pytest.importorskip("boto3")
    tmp = tmp_path_factory.mktemp("serve")
    with serve_process(tmp, models_dir) as (url, env):
        yield url, env, tmp


@pytest.fixture(scope="module")
def make_client(endpoint):
    import boto3
    from botocore.config import Config

    url = endpoint[0]

    def make(key: str = "AKIAFACELINKADMIN01", secret: str | None = None, retries: int = 1):
        return boto3.client("rekognition", endpoint_url=url, region_name="eu-west-1",
                            aws_access_key_id=key, aws_secret_access_key=secret or KEYS[key][0],
                            config=Config(retries={"total_max_attempts": retries}, read_timeout=300))

    return make


@pytest.fixture(scope="module")
def rek(make_client):
    return make_client()


def photo(faces_dir: Path, rel: str) -> bytes:
    return (faces_dir / rel).read_bytes()


@pytest.fixture(scope="module")
def recorded(rek):
    """Every raw response body the admin client receives: (operation, HTTP status, JSON)."""
    import json

    seen: list[tuple[str, int, dict]] = []

    def record(http_response, model, **_):
        seen.append((model.name, http_response.status_code, json.loads(http_response.content or b"{}")))

    rek.meta.events.register("after-call.rekognition", record)
    return seen
