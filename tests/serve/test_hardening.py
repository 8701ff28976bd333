"""What the network can send that is not a well-behaved SDK request: callers without a valid
key refused before their body is read, slow bodies cut off, the connections and the request
data held at once bounded, a collection-limited key kept to its collections, bodies that break
the JSON parser, and parameters of the wrong type. Real servers on loopback (conftest), and the
real ASGI app for what needs to hold a request half-read."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit

import pytest

from .conftest import KEYS, serve_process

botocore = pytest.importorskip("botocore")

ADMIN = "AKIAFACELINKADMIN01"


def signed_headers(url: str, target: str, body: bytes, key: str = ADMIN, secret: str | None = None) -> dict[str, str]:
    """The headers botocore's SigV4 signer (boto3's) puts on ``body`` for ``url``."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest("POST", url.rstrip("/") + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"RekognitionService.{target}"})
    SigV4Auth(Credentials(key, secret or KEYS[key][0]), "rekognition", "eu-west-1").add_auth(req)
    return dict(req.headers.items())


def post(url: str, target: str, params, raw: bytes | None = None, **kw) -> tuple[int, dict[str, str], dict]:
    """A signed request sent as is (boto3 would refuse the wrong-typed parameters client-side)."""
    body = raw if raw is not None else json.dumps(params).encode()
    req = urllib.request.Request(url + "/", data=body, method="POST", headers=signed_headers(url, target, body, **kw))
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def raw_request(url: str, headers: dict[str, str], content_length: int, body_part: bytes = b"",
                deadline_s: float = 20.0) -> tuple[int, dict[str, str], dict]:
    """Send the request head (and ``body_part`` of a body of ``content_length`` bytes) and no
    more; the server's answer, which must come within ``deadline_s``."""
    host = urlsplit(url)
    with socket.create_connection((host.hostname, host.port), timeout=deadline_s) as sock:
        head = {**headers, "Host": host.netloc, "Content-Length": str(content_length)}
        sock.sendall(f"POST / HTTP/1.1\r\n{''.join(f'{k}: {v}' + chr(13) + chr(10) for k, v in head.items())}\r\n"
                     .encode("latin-1") + body_part)
        resp = http.client.HTTPResponse(sock)
        try:
            resp.begin()
            data = resp.read()
        except TimeoutError:
            pytest.fail(f"no answer within {deadline_s} s: the server is waiting for the rest of the body")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data)


# -- refused before the body is read ---------------------------------------------------------
@pytest.mark.parametrize("caller", ["unsigned", "unknown key", "stale date"])
def test_unauthenticated_request_is_refused_before_its_body(endpoint, caller):
    """A caller without a known key and a current date is answered as soon as its headers are
    in: the 10 MiB its Content-Length announces are never sent here, and the answer still comes
    (before the fix the server waited for them, holding each such body in memory)."""
    from facelink.serve.app import MAX_BODY

    url = endpoint[0]
    if caller == "unsigned":
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "RekognitionService.ListCollections"}
        expected = (403, "MissingAuthenticationTokenException")
    elif caller == "unknown key":
        headers = signed_headers(url, "ListCollections", b"{}", key="AKIAUNKNOWNKEY000001",
                                 secret="whatever-0123456789")
        expected = (400, "UnrecognizedClientException")
    else:  # a known key, a date 6 years old (the signature is not what is checked first)
        headers = signed_headers(url, "ListCollections", b"{}")
        today = headers["X-Amz-Date"]
        headers["X-Amz-Date"] = "20200101T000000Z"
        headers["Authorization"] = headers["Authorization"].replace(f"/{today[:8]}/", "/20200101/")
        expected = (400, "InvalidSignatureException")
    status, resp_headers, payload = raw_request(url, headers, MAX_BODY - 1)
    assert (status, payload.get("__type")) == expected, payload
    assert resp_headers["content-type"] == "application/x-amz-json-1.1"
    assert resp_headers.get("connection") == "close"  # the rest of the body is not drained either
    if caller == "stale date":
        assert "expired" in payload["message"]


# -- the body deadline (a server with a tight one) ----------------------
@pytest.fixture(scope="module")
def tight(tmp_path_factory, models_dir):
    pytest.importorskip("boto3")
    with serve_process(tmp_path_factory.mktemp("tight"), models_dir,
                       "--body-timeout", "1", "--header-timeout", "1") as (url, _):
        yield url


@pytest.mark.parametrize("sent", [b"", b"POST / HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half a head"])
def test_a_connection_without_a_request_head_is_closed(tight, sent):
    """A connection that opens and sends nothing (or half a request head) is closed after
    --header-timeout (1 s here): idle sockets cannot pile up until the server has no file
    descriptors left (uvicorn alone never closes them)."""
    host = urlsplit(tight)
    with socket.create_connection((host.hostname, host.port), timeout=20) as sock:
        if sent:
            sock.sendall(sent)
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, nothing answered
        assert time.monotonic() - started < 15


def test_connections_over_the_cap_are_closed_unread_and_the_held_ones_still_served(tmp_path, models_dir):
    """--max-connections 3: a fourth connection is closed at once (long before the 30 s header
    deadline), so a flood cannot take every file descriptor; the three held are still answered,
    and once one closes a new caller gets in."""
    pytest.importorskip("boto3")
    with serve_process(tmp_path, models_dir, "--max-connections", "3", "--header-timeout", "30") as (url, _):
        host = urlsplit(url)
        held = [socket.create_connection((host.hostname, host.port), timeout=20) for _ in range(3)]
        try:
            with socket.create_connection((host.hostname, host.port), timeout=20) as extra:
                started = time.monotonic()
                assert extra.recv(1024) == b""  # closed by the server, nothing read or answered
                assert time.monotonic() - started < 10
            body = b"{}"
            head = {**signed_headers(url, "ListCollections", body), "Host": host.netloc,
                    "Content-Length": str(len(body))}
            held[0].sendall(f"POST / HTTP/1.1\r\n{''.join(f'{k}: {v}' + chr(13) + chr(10) for k, v in head.items())}"
                            f"\r\n".encode("latin-1") + body)
            resp = http.client.HTTPResponse(held[0])
            resp.begin()
            assert resp.status == 200 and "CollectionIds" in json.loads(resp.read())
            held.pop().close()
            deadline = time.monotonic() + 20
            while True:  # the server notices the close; then the next caller is served
                try:
                    status, _, payload = post(url, "ListCollections", {})
                    break
                except (ConnectionError, urllib.error.URLError):
                    assert time.monotonic() < deadline, "no room for a new caller after one closed"
            assert status == 200 and "CollectionIds" in payload
        finally:
            for sock in held:
                sock.close()


def _list_collections_on(sock: socket.socket, url: str) -> int:
    """A signed ListCollections sent on ``sock``; the HTTP status."""
    host, body = urlsplit(url), b"{}"
    head = {**signed_headers(url, "ListCollections", body), "Host": host.netloc, "Content-Length": str(len(body))}
    sock.sendall(f"POST / HTTP/1.1\r\n{''.join(f'{k}: {v}' + chr(13) + chr(10) for k, v in head.items())}"
                 f"\r\n".encode("latin-1") + body)
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    assert "CollectionIds" in json.loads(resp.read())
    return resp.status


def _served_soon(where: tuple[str, int], url: str, failure: str) -> None:
    """A new connection from this client is served within 20 s (the server notices closes, or a
    start-up probe's connection, a moment later)."""
    deadline = time.monotonic() + 20
    while True:
        with socket.create_connection(where, timeout=20) as sock:
            try:
                if _list_collections_on(sock, url) == 200:
                    return
            except (ConnectionError, http.client.HTTPException):
                pass
        assert time.monotonic() < deadline, failure


def _closed_unread(sock: socket.socket) -> bool:
    started = time.monotonic()
    return sock.recv(1024) == b"" and time.monotonic() - started < 10


def test_one_client_cannot_take_every_connection(tmp_path, models_dir):
    """--max-connections-per-client 2 (of 10): a third connection from one address is closed at
    once (the 30 s header deadline is far off), while another client (127.0.0.2, also loopback)
    is served; once the first client closes one of its two, it gets in again. Before, one client
    holding every place shut everyone else out until its sockets timed out."""
    pytest.importorskip("boto3")
    with serve_process(tmp_path, models_dir, "--max-connections", "10", "--max-connections-per-client", "2",
                       "--header-timeout", "30") as (url, _):
        host = urlsplit(url)
        where = (host.hostname, host.port)
        held: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 20
            while len(held) < 2:  # both served: they hold the client's two places (the start-up
                sock = socket.create_connection(where, timeout=20)  # probe may hold one a moment)
                try:
                    assert _list_collections_on(sock, url) == 200
                    held.append(sock)
                except (ConnectionError, http.client.HTTPException):
                    sock.close()
                    assert time.monotonic() < deadline, "the client never got two places"
            with socket.create_connection(where, timeout=20) as third:
                assert _closed_unread(third), "a third connection from one client was not refused"
            with socket.create_connection(where, timeout=20, source_address=("127.0.0.2", 0)) as other:
                assert _list_collections_on(other, url) == 200  # another client is not shut out
            assert [_list_collections_on(sock, url) for sock in held] == [200, 200]  # still served
            held.pop().close()
            _served_soon(where, url, "the client got no place back after closing one")
        finally:
            for sock in held:
                sock.close()


def test_websocket_upgrades_give_their_clients_places_back(tmp_path, models_dir):
    """--max-connections-per-client 2: two WebSocket upgrade requests, each closed by the client,
    then a plain request from the same address is served. Before (uvicorn's ws="auto" with
    websockets installed), the upgrade handed the socket to another protocol, this one's
    connection_lost never ran, and each upgrade kept one of the client's places for good.
    The upgrades do not flood the log: one counted line, not uvicorn's two lines each (one of
    them telling the operator to install a WebSocket library)."""
    upgrade = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    with serve_process(tmp_path, models_dir, "--max-connections", "10", "--max-connections-per-client", "2",
                       "--header-timeout", "30") as (url, _):
        host = urlsplit(url)
        where = (host.hostname, host.port)
        _served_soon(where, url, "no place at start")
        for _ in range(4):  # twice the cap
            with socket.create_connection(where, timeout=20) as sock:
                sock.sendall(upgrade)
                assert sock.recv(1024).startswith(b"HTTP/1.1 ")  # answered, not switched
        _served_soon(where, url, "the upgrades' places were never given back")
        logged = (tmp_path / "serve.log").read_text()
    assert "Unsupported upgrade request" not in logged and "WebSocket library" not in logged, logged
    assert logged.count("upgrade request(s)") == 1, logged  # the first; the rest within 10 s are counted


def test_a_client_is_keyed_by_its_address_or_its_ipv6_64():
    from facelink.serve.limits import client_key

    assert client_key(("127.0.0.2", 5000)) == "127.0.0.2" != client_key(("127.0.0.1", 5000))
    same = [client_key((f"2001:db8:1:2::{i:x}", 443, 0, 0)) for i in (1, 0xFFFF)]
    assert same[0] == same[1] == "2001:db8:1:2::/64" != client_key(("2001:db8:1:3::1", 443, 0, 0))
    assert client_key(("::ffff:192.0.2.7", 1, 0, 0)) == "192.0.2.7"
    # link-local: every link's prefix is fe80::/64, so each address (on its link) is its own client
    assert client_key(("fe80::1%eth0", 1, 0, 2)) == "fe80::1%eth0"
    assert len({client_key((a, 1, 0, 2)) for a in ("fe80::1%eth0", "fe80::2%eth0", "fe80::1%wlan0")}) == 3
    assert client_key(None) == client_key("/run/socket") == client_key(("not an address", 1)) == "?"


def test_a_burst_from_a_client_at_its_cap_does_not_shut_others_out(tmp_path, models_dir):
    """One client at its cap (2) opens 200 connections at once, over and over: each is closed
    unread, and another client (127.0.0.2) is served every time. Before, the refused ones stayed
    in the server's connection set until their connection_lost ran (a loop turn later), so a
    burst filled --max-connections (20) and the other client was refused too (17 of 20 rounds)."""
    with serve_process(tmp_path, models_dir, "--max-connections", "20", "--max-connections-per-client", "2",
                       "--header-timeout", "30") as (url, _):
        host = urlsplit(url)
        where = (host.hostname, host.port)
        refused = 0
        for _ in range(10):
            burst = []
            try:
                for _ in range(200):
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.connect_ex(where)
                    burst.append(sock)
                with socket.create_connection(where, timeout=20, source_address=("127.0.0.2", 0)) as other:
                    try:
                        _list_collections_on(other, url)
                    except (ConnectionError, http.client.HTTPException):
                        refused += 1
            finally:
                for sock in burst:
                    sock.close()
            _served_soon(where, url, "the bursting client got no place back")  # the burst is gone
        assert refused == 0, f"another client was refused in {refused} of 10 bursts"


def test_a_body_must_arrive_within_the_deadline(tight):
    """A signed request whose body stops coming is answered RequestTimeoutException after
    --body-timeout (1 s here), not held open."""
    headers = signed_headers(tight, "ListCollections", b'{"MaxResults": 1}'.ljust(100))
    started = time.monotonic()
    status, resp_headers, payload = raw_request(tight, headers, 100, b'{"MaxResu', deadline_s=20)
    assert (status, payload.get("__type")) == (408, "RequestTimeoutException"), payload
    assert resp_headers.get("connection") == "close"
    assert time.monotonic() - started < 15


# -- bodies in flight (the real ASGI app, one request held half-read) ------------------------
def _scope(headers: dict[str, str], content_length: int) -> dict:
    hs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    hs += [(b"host", b"127.0.0.1:8443"), (b"content-length", str(content_length).encode())]
    return {"type": "http", "method": "POST", "path": "/", "raw_path": b"/", "query_string": b"", "headers": hs}


def _app(tmp_path, **kw):
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store
    from facelink.serve.app import RekognitionApp
    from facelink.serve.credentials import AccessKey

    def no_engine():
        raise AssertionError("these requests need no engine")

    keys = {ADMIN: AccessKey(ADMIN, KEYS[ADMIN][0], requests_per_second=1e6)}
    return RekognitionApp(keys, lambda: Context(Store(tmp_path / "db.sqlite"), no_engine), workers=1, **kw)


async def _respond(app, scope, receive) -> tuple[int, dict[str, str], dict]:
    sent: list[dict] = []

    async def send(msg):
        sent.append(msg)

    await asyncio.wait_for(app(scope, receive, send), 20)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return (sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0]["headers"]},
            json.loads(sent[1]["body"]))


class _Bodies:
    """A request body delivered two ways: ``held`` once ``go`` is set (``reading`` says it is
    being waited for), ``counted`` at once (``reads`` counts how often it was)."""

    def __init__(self, body: bytes) -> None:
        self.body, self.reads = body, 0
        self.reading, self.go = asyncio.Event(), asyncio.Event()

    async def held(self) -> dict:
        self.reading.set()
        await self.go.wait()
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def counted(self) -> dict:
        self.reads += 1
        return {"type": "http.request", "body": self.body, "more_body": False}


@pytest.mark.parametrize("limits,refusal,other", [
    ({"max_body_bytes_in_flight": 1_000_000}, "too much request data in flight", None),
    ({"max_body_bytes_in_flight": 2_000_000, "max_body_bytes_per_client": 1_000_000}, "from your address",
     "127.0.0.3")], ids=["all", "per client"])
def test_request_data_in_flight_is_bounded(tmp_path, limits, refusal, other):
    """A 600 kB request being read (trickled) from 127.0.0.2 leaves no room for a second one from
    it: with 1 MB allowed at once in all, or with 2 MB in all and 1 MB to one client. That one
    is ThrottlingException without a byte of its body read; in the second case another client
    (127.0.0.3) is still served. When the first is done, its room is free again and nothing is
    kept for its client."""
    url = "http://127.0.0.1:8443"
    body = b'{"MaxResults": 1}'.ljust(600_000)  # JSON whitespace
    headers = signed_headers(url, "ListCollections", body)

    def scope(host: str) -> dict:
        return {**_scope(headers, len(body)), "client": (host, 50_000)}

    app = _app(tmp_path, **limits)

    async def scenario():
        bodies = _Bodies(body)
        first = asyncio.create_task(_respond(app, scope("127.0.0.2"), bodies.held))
        await asyncio.wait_for(bodies.reading.wait(), 20)
        status, _, payload = await _respond(app, scope("127.0.0.2"), bodies.counted)
        assert (status, payload.get("__type"), bodies.reads) == (503, "ThrottlingException", 0), payload
        assert refusal in payload["message"]
        if other is not None:
            assert (await _respond(app, scope(other), bodies.counted))[0] == 200 and bodies.reads == 1
        bodies.go.set()
        assert (await first)[0] == 200
        reads = bodies.reads
        assert (await _respond(app, scope("127.0.0.2"), bodies.counted))[0] == 200 and bodies.reads == reads + 1
        assert app.body_bytes_by_client == {} and app.body_bytes_in_flight == 0

    try:
        asyncio.run(scenario())
    finally:
        app.close()


def test_an_unexpected_error_is_a_json_internal_server_error(tmp_path, monkeypatch, caplog):
    """A bug anywhere in answering a request is Rekognition's InternalServerError (500, JSON),
    logged once with its traceback; the client sees neither the traceback nor the error's text."""
    from facelink.serve.app import RekognitionApp

    async def broken(self, scope, body, headers=None):
        raise RuntimeError("internal detail 4711")

    monkeypatch.setattr(RekognitionApp, "handle", broken)
    app = _app(tmp_path)
    body = b"{}"

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    caplog.set_level(logging.ERROR, logger="facelink.serve")
    try:
        status, headers, payload = asyncio.run(
            _respond(app, _scope(signed_headers("http://127.0.0.1:8443", "ListCollections", body), 2), receive))
    finally:
        app.close()
    assert status == 500 and payload == {"__type": "InternalServerError", "message": "internal error"}
    assert headers["content-type"] == "application/x-amz-json-1.1"
    logged = [r for r in caplog.records if r.name.startswith("facelink.serve")]
    assert len(logged) == 1 and logged[0].exc_info is not None


# -- through the conftest server -------------------------------------------------------------
def test_list_collections_pages_only_the_keys_collections(make_client):
    """A key limited to "lobby" pages through "lobby" alone: no empty page, and no NextToken
    (which holds the last id of its page) naming a collection it may not use."""
    admin = make_client()
    for c in ("aa-hidden", "lobby", "zz-hidden"):
        admin.create_collection(CollectionId=c)
    lobby = make_client("AKIAFACELINKLOBBY01")
    pages = list(lobby.get_paginator("list_collections").paginate(PaginationConfig={"PageSize": 1}))
    assert [p["CollectionIds"] for p in pages] == [["lobby"]]
    for p in pages:
        assert "NextToken" not in p
    assert "NextToken" not in lobby.list_collections(MaxResults=1)
    tokens, token = [], None
    while True:  # the admin key still pages through all of them
        page = admin.list_collections(MaxResults=1, **({"NextToken": token} if token else {}))
        token = page.get("NextToken")
        if not token:
            break
        tokens.append(token)
    assert len(tokens) == 2 and b"aa-hidden" in base64.urlsafe_b64decode(tokens[0])


def test_deeply_nested_json_is_a_serialization_error(endpoint):
    """100,000 nested arrays in a signed body: SerializationException (400, JSON), not the
    parser's RecursionError as a 500 text/plain with a traceback in the log."""
    url, _, tmp = endpoint
    body = b'{"CollectionId":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, headers, payload = post(url, "DescribeCollection", None, raw=body)
    assert (status, payload.get("__type")) == (400, "SerializationException"), payload
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert "Traceback" not in (tmp / "serve.log").read_text()


def test_a_body_of_a_million_json_values_is_refused_before_parsing(endpoint, make_client):
    """A signed 3 MB body of a million empty arrays (parsed, ~250 MB and 1-2 s of the event
    loop) is a SerializationException before json.loads; DeleteFaces' largest legal request,
    4,096 FaceIds, still reaches the operation."""
    url = endpoint[0]
    body = b'{"CollectionId":"x","Junk":[' + b"[]," * 1_000_000 + b'[]]}'
    status, _, payload = post(url, "DescribeCollection", None, raw=body)
    assert (status, payload.get("__type")) == (400, "SerializationException"), payload
    assert "JSON values" in payload["message"]
    make_client().create_collection(CollectionId="many-ids")
    ids = [str(uuid.uuid4()) for _ in range(4096)]
    status, _, payload = post(url, "DeleteFaces", {"CollectionId": "many-ids", "FaceIds": ids})
    assert status == 200 and len(payload["UnsuccessfulFaceDeletions"]) == 4096, payload


@pytest.mark.parametrize("face_ids", ["", {}, 0, False, []])
def test_list_faces_refuses_falsy_face_ids_of_any_type(endpoint, make_client, face_ids):
    """FaceIds that is not a list of face ids is refused, even when Python reads it as false
    (it was taken as 'no filter', listing every face)."""
    url = endpoint[0]
    coll = "falsy-ids"
    if post(url, "DescribeCollection", {"CollectionId": coll})[0] != 200:
        make_client().create_collection(CollectionId=coll)
    status, _, payload = post(url, "ListFaces", {"CollectionId": coll, "FaceIds": face_ids})
    assert (status, payload.get("__type")) == (400, "InvalidParameterException"), payload


def test_a_numeric_string_is_not_a_threshold(endpoint, make_client):
    url = endpoint[0]
    make_client().create_collection(CollectionId="string-threshold")
    for name, value in (("FaceMatchThreshold", "50"), ("FaceMatchThreshold", True), ("MaxFaces", "5")):
        status, _, payload = post(url, "SearchFaces", {"CollectionId": "string-threshold",
                                                       "FaceId": str(uuid.uuid4()), name: value})
        assert (status, payload.get("__type")) == (400, "InvalidParameterException"), (name, value, payload)
        assert name in payload["message"]


@pytest.mark.parametrize("flag", [["--body-timeout", "0"], ["--header-timeout", "0"], ["--body-memory-mib", "10"],
                                  ["--max-connections", "0"], ["--max-connections-per-client", "0"],
                                  ["--body-memory-per-client-mib", "10"]])
def test_serve_refuses_limits_that_cannot_work(tmp_path, flag):
    """No time for a request head or a body, or less room than one largest
    request would refuse every request: the server does not start (InvalidParameterException, exit 2)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "serve", "--credentials",
                           str(tmp_path / "keys.toml"), "--port", "0", *flag], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and json.loads(proc.stderr)["__type"] == "InvalidParameterException", proc.stderr
    assert flag[0] in json.loads(proc.stderr)["Message"]
