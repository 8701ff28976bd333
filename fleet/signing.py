"""Ed25519 keys and signatures (``cryptography``). The desk keeps the private key (PEM, 0600);
each door is configured with the public key(s) it trusts (``fleet.trusted_keys``).

A signature is ``{"Algorithm": "Ed25519", "KeyId": <16 hex>, "Signature": <base64>}`` where
KeyId is the first 16 hex digits of the SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facelink.config.paths import write_durably
from facelink.errors import ConfigError, InvalidSignatureException

ALGORITHM = "Ed25519"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """A new desk key: private PEM written 0600 (refuses to overwrite), public PEM beside it."""
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.exists():
        raise ConfigError(f"{private_path} exists: not overwriting a signing key")
    key = Ed25519PrivateKey.generate()
    try:  # whole, 0600, durable (a desk key lost to a power cut strands every door), never over one
        write_durably(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), replace=False)
    except FileExistsError:
        raise ConfigError(f"{private_path} exists: not overwriting a signing key") from None
    write_durably(public_path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo),
                  mode=0o644)  # doors are given it: anyone may read it
    return key_id(key.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"signing key {path} is readable by others (mode {mode:o}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return key


def load_trusted(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """The public keys a door trusts, by KeyId."""
    out: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        try:
            key = serialization.load_pem_public_key(Path(p).read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read trusted key {p}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"{p} is not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{p} is not an Ed25519 public key")
        out[key_id(key)] = key
    return out


def sign(private: Ed25519PrivateKey, data: bytes) -> dict[str, str]:
    return {"Algorithm": ALGORITHM, "KeyId": key_id(private.public_key()),
            "Signature": base64.b64encode(private.sign(data)).decode()}


def verify(trusted: dict[str, Ed25519PublicKey], data: bytes, signature: Any) -> str:
    """The KeyId that signed ``data``; InvalidSignatureException (with why) otherwise."""
    if not isinstance(signature, dict) or not signature:
        raise InvalidSignatureException("UNSIGNED: no signature")
    if signature.get("Algorithm") != ALGORITHM:
        raise InvalidSignatureException(f"UNSUPPORTED_ALGORITHM: {signature.get('Algorithm')!r}")
    kid = signature.get("KeyId")
    public = trusted.get(kid) if isinstance(kid, str) else None
    if public is None:
        raise InvalidSignatureException(f"UNKNOWN_KEY: signed by {kid!r}, not a trusted key")
    try:
        public.verify(base64.b64decode(str(signature.get("Signature", "")), validate=True), data)
    except (InvalidSignature, ValueError):
        raise InvalidSignatureException("BAD_SIGNATURE: the data or its signature was altered") from None
    return kid


MAX_ENVELOPE_REST = 4096  # an envelope's bytes outside its payload text (the signature)
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def open_envelope(message: bytes) -> tuple[str, bytes, Any]:
    """The payload text, its UTF-8 bytes (what the signature covers) and the signature of a
    signed envelope ``{"payload": "<text>", "signature": {...}}`` (change sets, heads);
    ValueError saying why when it is not one. Anything from the network arrives here unverified,
    so every way it can fail to parse -- not JSON, not UTF-8, nesting too deep for the parser
    (RecursionError), a payload with a lone surrogate that cannot be encoded -- is this one
    ValueError (the callers' MALFORMED refusal). Nothing is verified here: see :func:`verify`.

    Parsed by hand, key by key, so that an unsigned message cannot make the door build objects it
    never needed: the payload is read as one string; any other key than ``payload`` and
    ``signature``, a key twice, or a signature longer than :data:`MAX_ENVELOPE_REST` is refused
    before its value is parsed (``json.loads`` of a 64 MB envelope with ``"junk": [{}, {}, ...]``
    beside the payload built 1.5 GB of Python objects before the signature was even looked at)."""
    try:
        text = message.decode("utf-8") if isinstance(message, (bytes, bytearray)) else str(message)
    except UnicodeDecodeError:
        raise ValueError("not a signed envelope (not UTF-8)") from None
    fields: dict[str, Any] = {}
    try:
        i = _WS.match(text, 0).end()
        if text[i:i + 1] != "{":
            raise ValueError("not a JSON object")
        i = _WS.match(text, i + 1).end()
        while text[i:i + 1] != "}":
            if text[i:i + 1] != '"':
                raise ValueError("a key is not a string")
            key, i = json.decoder.scanstring(text, i + 1)
            i = _WS.match(text, i).end()
            if text[i:i + 1] != ":" or key in fields or key not in ("payload", "signature"):
                raise ValueError(f"unexpected key {key[:40]!r}")
            i = _WS.match(text, i + 1).end()
            if key == "payload":
                if text[i:i + 1] != '"':
                    raise ValueError("payload is not text")
                fields[key], i = json.decoder.scanstring(text, i + 1)
            else:  # parsed from a bounded slice: a longer signature fails to parse (refused)
                fields[key], used = _DECODER.raw_decode(text[i:i + MAX_ENVELOPE_REST])
                i += used
            i = _WS.match(text, i).end()
            if text[i:i + 1] == ",":
                i = _WS.match(text, i + 1).end()
                if text[i:i + 1] == "}":
                    raise ValueError("trailing comma")
            elif text[i:i + 1] != "}":
                raise ValueError("expected ',' or '}'")
        if _WS.match(text, i + 1).end() != len(text):
            raise ValueError("data after the envelope")
    except (ValueError, RecursionError):
        raise ValueError("not a signed envelope") from None
    if "payload" not in fields:
        raise ValueError("not a signed envelope")
    payload, signature = fields["payload"], fields.get("signature")
    try:
        data = payload.encode()
    except UnicodeEncodeError:
        raise ValueError("payload is not valid Unicode text (a lone surrogate)") from None
    return payload, data, signature
