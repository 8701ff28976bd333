"""AWS Signature Version 4 verification (header form, as botocore signs), with the errors AWS
returns: a missing signature, an unknown key, a wrong signature, a stale date."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from facelink.errors import WireError

from .credentials import AccessKey

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "rekognition"
REQUIRED_SIGNED = frozenset({"host", "x-amz-date", "x-amz-target", "content-type"})
MAX_SKEW = timedelta(minutes=5)  # AWS's limit between the signer's clock and the server's
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request,\s*"
                   r"SignedHeaders=([a-z0-9\-;]+),\s*Signature=([0-9a-f]{64})")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ","
    body: bytes


def _canonical_query(query: str) -> str:
    pairs = sorted(tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p)
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_request(req: Request, signed: list[str]) -> str:
    headers = "".join(f"{h}:{' '.join(req.headers.get(h, '').split())}\n" for h in signed)
    payload = req.headers.get("x-amz-content-sha256") or hashlib.sha256(req.body).hexdigest()
    return "\n".join([req.method, req.path or "/", _canonical_query(req.query), headers, ";".join(signed), payload])


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


@dataclass(frozen=True)
class Credential:
    """What the Authorization and X-Amz-Date headers say, checked: the body is not needed."""

    key: AccessKey
    scope_date: str
    region: str
    service: str
    signed: list[str]
    signature: str
    amz_date: str


def check_credential(headers: dict[str, str], keys: dict[str, AccessKey], now: datetime | None = None) -> Credential:
    """The checks that need only the headers (an Authorization header that parses, a known key,
    a date within 5 minutes), so that a request failing them is refused before its body is read.
    ``headers``: lower-case names. WireError as ``verify``."""
    auth = headers.get("authorization")
    if not auth:
        raise WireError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
    m = _AUTH.fullmatch(auth.strip())
    if m is None:
        raise WireError("IncompleteSignatureException",
                        "Authorization header requires Credential, SignedHeaders and Signature (AWS4-HMAC-SHA256)")
    key_id, scope_date, region, service, signed_list, signature = m.groups()
    key = keys.get(key_id)
    if key is None or "x-amz-security-token" in headers:
        raise WireError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if service != SERVICE:
        raise WireError("InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'.")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise WireError("IncompleteSignatureException", "X-Amz-Date header is missing or malformed") from None
    if scope_date != amz_date[:8]:
        raise WireError("InvalidSignatureException", "Credential should be scoped to a valid date.")
    now = now or datetime.now(timezone.utc)
    if abs(now - signed_at) > MAX_SKEW:
        raise WireError("InvalidSignatureException",
                        f"Signature expired: {amz_date} is now earlier or later than "
                        f"{now.strftime('%Y%m%dT%H%M%SZ')} (the limit is 5 minutes either way).")
    signed = signed_list.split(";")
    if not REQUIRED_SIGNED <= set(signed) or signed != sorted(signed):
        # x-amz-target names the operation: unsigned, a captured body could be replayed as another one
        raise WireError("InvalidSignatureException",
                        f"SignedHeaders must include {', '.join(sorted(REQUIRED_SIGNED))}, sorted")
    if any(h not in headers for h in signed):
        raise WireError("InvalidSignatureException", "a signed header is missing from the request")
    return Credential(key, scope_date, region, service, signed, signature, amz_date)


def verify(req: Request, keys: dict[str, AccessKey], now: datetime | None = None) -> AccessKey:
    """The key that signed ``req``, or WireError. Every check runs before the request is used."""
    cred = check_credential(req.headers, keys, now)
    key, signed = cred.key, cred.signed
    scope_date, region, service, amz_date = cred.scope_date, cred.region, cred.service, cred.amz_date
    payload_hash = req.headers.get("x-amz-content-sha256")
    if payload_hash is not None and payload_hash != hashlib.sha256(req.body).hexdigest():
        raise WireError("InvalidSignatureException", "X-Amz-Content-Sha256 does not match the body")
    scope = f"{scope_date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical_request(req, signed).encode()).hexdigest()])
    expected = hmac.new(signing_key(key.secret, scope_date, region, service), to_sign.encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, cred.signature):
        raise WireError("InvalidSignatureException",
                        "The request signature we calculated does not match the signature you provided. "
                        "Check your AWS Secret Access Key and signing method.")
    return key
