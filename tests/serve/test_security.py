"""SigV4 verification against botocore's own signer, the credentials file's rules, and TLS."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from .conftest import KEYS, serve_process

botocore = pytest.importorskip("botocore")


def signed(secret: str = "admin-secret-0123456789", body: bytes = b'{"MaxResults": 1}'):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from facelink.serve.sigv4 import Request

    req = AWSRequest("POST", "http://127.0.0.1:8443/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "RekognitionService.ListCollections"})
    SigV4Auth(Credentials("AKIAFACELINKADMIN01", secret), "rekognition", "eu-west-1").add_auth(req)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers["host"] = "127.0.0.1:8443"
    return Request("POST", "/", "", headers, body)


@pytest.fixture()
def keys():
    from facelink.serve.credentials import AccessKey

    return {"AKIAFACELINKADMIN01": AccessKey("AKIAFACELINKADMIN01", "admin-secret-0123456789")}


def test_sigv4_verifies_botocore_signatures(keys):
    from facelink.errors import WireError
    from facelink.serve.sigv4 import Request, verify

    assert verify(signed(), keys).access_key_id == "AKIAFACELINKADMIN01"
    req = signed()
    with pytest.raises(WireError, match="expired") as exc:  # AWS's 5-minute window
        verify(req, keys, now=datetime.now(timezone.utc) + timedelta(minutes=6))
    assert exc.value.code == "InvalidSignatureException"
    with pytest.raises(WireError) as exc:
        verify(signed(secret="not-the-secret-0123456"), keys)
    assert exc.value.code == "InvalidSignatureException"
    tampered = Request(req.method, req.path, req.query, req.headers, b'{"MaxResults": 2}')
    with pytest.raises(WireError) as exc:  # the body is signed too
        verify(tampered, keys)
    assert exc.value.code == "InvalidSignatureException"
    retargeted = Request(req.method, req.path, req.query, {**req.headers, "x-amz-target": "RekognitionService.DeleteCollection"}, req.body)
    with pytest.raises(WireError):
        verify(retargeted, keys)
    with pytest.raises(WireError) as exc:
        verify(Request("POST", "/", "", {"host": "x"}, b"{}"), keys)
    assert exc.value.code == "MissingAuthenticationTokenException" and exc.value.status == 403


def test_operation_header_must_be_signed(keys):
    """A signature that leaves X-Amz-Target out would let a captured body be replayed as another
    operation (DescribeCollection's body as DeleteCollection): such signatures are refused."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from facelink.errors import WireError
    from facelink.serve.sigv4 import Request, verify

    class UnsignedTarget(SigV4Auth):
        def headers_to_sign(self, request):
            hs = super().headers_to_sign(request)
            del hs["X-Amz-Target"]
            return hs

    req = AWSRequest("POST", "http://127.0.0.1:8443/", data=b"{}", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "RekognitionService.ListCollections"})
    UnsignedTarget(Credentials("AKIAFACELINKADMIN01", "admin-secret-0123456789"), "rekognition",
                   "eu-west-1").add_auth(req)
    headers = {k.lower(): v for k, v in req.headers.items()} | {"host": "127.0.0.1:8443"}
    with pytest.raises(WireError, match="x-amz-target") as exc:
        verify(Request("POST", "/", "", headers, b"{}"), keys)
    assert exc.value.code == "InvalidSignatureException"


def test_credentials_file_must_be_private(tmp_path):
    from facelink.errors import ConfigError
    from facelink.serve.credentials import load_keys

    f = tmp_path / "keys.toml"
    f.write_text('[keys.AKIA1]\nsecret = "0123456789abcdef0123"\n')
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keys(f)
    f.chmod(0o600)
    assert set(load_keys(f)) == {"AKIA1"}
    f.write_text("")
    with pytest.raises(ConfigError, match="no one"):
        load_keys(f)
    f.write_text('[keys.AKIA1]\nsecret = "short"\n')
    with pytest.raises(ConfigError):
        load_keys(f)


def test_serve_refuses_bad_setup(tmp_path):
    f = tmp_path / "keys.toml"
    f.write_text('[keys.AKIA1]\nsecret = "0123456789abcdef0123"\n')
    f.chmod(0o640)
    for extra in ([], ["--host", "0.0.0.0"]):
        if extra:
            f.chmod(0o600)
        proc = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "serve", "--credentials", str(f), *extra],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 8 and json.loads(proc.stderr)["__type"] == "ConfigError", proc.stderr


def _certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def _tls_serve(tmp_path, models_dir, *args: str):
    """`facelink serve` over TLS with ``args``: yields (url, its host and port, the certificate)."""
    from urllib.parse import urlsplit

    cert, key = _certificate(tmp_path)
    with serve_process(tmp_path, models_dir, "--tls-cert", str(cert), "--tls-key", str(key), *args) as (url, _):
        yield url, urlsplit(url), cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_tls(tmp_path, models_dir, faces_dir):
    import boto3

    cert, key = _certificate(tmp_path)
    with serve_process(tmp_path, models_dir, "--tls-cert", str(cert), "--tls-key", str(key)) as (url, _):
        admin = "AKIAFACELINKADMIN01"
        rek = boto3.client("rekognition", endpoint_url=url.replace("http://", "https://"), region_name="eu-west-1",
                           aws_access_key_id=admin, aws_secret_access_key=KEYS[admin][0], verify=str(cert))
        assert rek.list_collections()["CollectionIds"] == []
        out = rek.detect_faces(Image={"Bytes": (faces_dir / "people/obama/1.jpg").read_bytes()})
        assert len(out["FaceDetails"]) == 1
        rek.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_tls_connections_are_counted_and_timed_before_their_handshake(tmp_path, models_dir):
    """Over TLS a connection counts from its accept and its handshake has --header-timeout: 40
    silent sockets against --max-connections 3 are all closed by the server (those over the cap at
    once, the rest when their handshake time is up; asyncio's own handshake time is 60 s, and
    its protocol saw a connection only after the handshake, so none was counted or closed), and a
    real TLS client is served afterwards."""
    import socket
    import time

    import boto3

    with _tls_serve(tmp_path, models_dir, "--max-connections", "3", "--header-timeout", "2") as (url, where, cert):
        silent = [socket.create_connection((where.hostname, where.port), timeout=20) for _ in range(40)]
        try:
            started = time.monotonic()
            for sock in silent:
                assert sock.recv(1024) == b""  # closed by the server, nothing sent
            assert time.monotonic() - started < 15
        finally:
            for sock in silent:
                sock.close()
        admin = "AKIAFACELINKADMIN01"
        rek = boto3.client("rekognition", endpoint_url=url.replace("http://", "https://"), region_name="eu-west-1",
                           aws_access_key_id=admin, aws_secret_access_key=KEYS[admin][0], verify=str(cert))
        assert rek.list_collections()["CollectionIds"] == []
        rek.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_tls_connections_in_their_handshake_count_against_the_cap(tmp_path, models_dir):
    """--max-connections 3, --header-timeout 30: three silent TLS connections (handshake not
    begun) hold the three places, so a fourth is closed at once, long before any deadline; once
    they hang up, a TLS client is served."""
    import socket
    import ssl
    import time

    with _tls_serve(tmp_path, models_dir, "--max-connections", "3", "--header-timeout", "30") as (_, where, cert):
        held = [socket.create_connection((where.hostname, where.port), timeout=20) for _ in range(3)]
        try:
            with socket.create_connection((where.hostname, where.port), timeout=20) as extra:
                started = time.monotonic()
                assert extra.recv(1024) == b""  # closed by the server before any handshake
                assert time.monotonic() - started < 15
        finally:
            for sock in held:
                sock.close()
        ctx = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 20
        while True:  # the server notices the three hang-ups; then a handshake gets through
            try:
                with ctx.wrap_socket(socket.create_connection((where.hostname, where.port), timeout=20),
                                     server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    assert tls.recv(1024).startswith(b"HTTP/1.1 ")
                    break
            except (ssl.SSLError, ConnectionError):
                assert time.monotonic() < deadline, "no room for a TLS client after the silent ones hung up"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_tls_connections_count_against_their_clients_cap_until_their_handshake_ends(tmp_path, models_dir):
    """--max-connections-per-client 2, --header-timeout 3: two silent TLS connections from one
    address take its two places before any handshake, a third is closed at once, another client
    (127.0.0.2) completes a handshake and is answered; when the silent ones' handshake time is
    up their places are given back and the first client is served too."""
    import socket
    import ssl
    import time

    def answered(ctx, where, source=None) -> bool:
        with ctx.wrap_socket(socket.create_connection((where.hostname, where.port), timeout=20,
                                                      source_address=source),
                             server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return tls.recv(1024).startswith(b"HTTP/1.1 ")

    with _tls_serve(tmp_path, models_dir, "--max-connections", "10", "--max-connections-per-client", "2",
                    "--header-timeout", "3") as (_, where, cert):
        ctx = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 20
        while True:  # the start-up probe's place is given back once its handshake fails
            try:
                if answered(ctx, where):
                    break
            except (ssl.SSLError, ConnectionError):
                assert time.monotonic() < deadline, "no TLS client served at start"
        held = [socket.create_connection((where.hostname, where.port), timeout=20) for _ in range(2)]
        try:
            with socket.create_connection((where.hostname, where.port), timeout=20) as extra:
                started = time.monotonic()
                assert extra.recv(1024) == b""  # closed at once, well before the 3 s handshake time
                assert time.monotonic() - started < 2.5
            assert answered(ctx, where, ("127.0.0.2", 0))  # another client is not shut out
            for sock in held:
                assert sock.recv(1024) == b""  # handshake time up: closed by the server
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 20
        while True:  # their places are given back: the first client is served again
            try:
                if answered(ctx, where):
                    break
            except (ssl.SSLError, ConnectionError):
                assert time.monotonic() < deadline, "the silent connections' places were never given back"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_a_request_sent_with_the_clients_last_handshake_flight_is_answered(tmp_path, models_dir):
    """A TLS 1.3 client may send its request in the same packet as its Finished: the server then
    decrypts the request before the connection is handed to the HTTP protocol, which keeps it
    and reads it once it has the connection (it used to be read without one)."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    cert, key = _certificate(tmp_path)
    with serve_process(tmp_path, models_dir, "--tls-cert", str(cert), "--tls-key", str(key)) as (url, _):
        where = urlsplit(url)
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with socket.create_connection((where.hostname, where.port), timeout=20) as sock:
            while True:  # drive the handshake by hand, holding back the client's last flight
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if outgoing.pending:
                        sock.sendall(outgoing.read())
                    data = sock.recv(65536)
                    assert data, "closed by the server during the handshake"
                    incoming.write(data)
            tls.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            sock.sendall(outgoing.read())  # Finished and the request, in one write
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                assert data, f"closed without an answer: {answer!r}"
                incoming.write(data)
                try:
                    answer += tls.read(65536)
                except ssl.SSLWantReadError:
                    continue
        assert answer.startswith(b"HTTP/1.1 ")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_a_tls_port_spoken_to_in_plain_http_or_garbage_closes_and_frees_its_place(tmp_path, models_dir):
    """--max-connections 2 over TLS: plain HTTP, random bytes and a half ClientHello followed by a
    hang-up, ten of each, are each closed by the server (never answered in clear) and leave no
    place taken: a TLS client is served after them."""
    import os
    import socket
    import ssl

    with _tls_serve(tmp_path, models_dir, "--max-connections", "2", "--header-timeout", "30") as (_, where, cert):
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(512), b"\x16\x03\x01\x02\x00\x01"):
            for _ in range(10):
                with socket.create_connection((where.hostname, where.port), timeout=20) as sock:
                    sock.sendall(junk)
                    if junk.startswith(b"\x16"):
                        sock.shutdown(socket.SHUT_WR)  # half a ClientHello, then the client hangs up
                    answer = sock.recv(1024)  # read until the server closes: then its place is free
                    assert not answer.startswith(b"HTTP/")  # a TLS alert or nothing, then closed
                    while answer:
                        answer = sock.recv(1024)
        ctx = ssl.create_default_context(cafile=str(cert))
        with ctx.wrap_socket(socket.create_connection((where.hostname, where.port), timeout=20),
                             server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert tls.recv(1024).startswith(b"HTTP/1.1 ")
