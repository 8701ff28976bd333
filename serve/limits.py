"""The endpoint's default limits, in one place: `facelink serve`'s options and the app use them."""

from __future__ import annotations

DEFAULT_BODY_TIMEOUT = 30.0  # seconds to receive a whole request body (10 MiB at ~3 Mbit/s)
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a connection to send a request head (facelink.serve.protocol)
DEFAULT_BODY_MEMORY_MIB = 64  # request bodies being read or processed, all together: six of the largest
DEFAULT_BODY_MEMORY_PER_CLIENT_MIB = 32  # one client address (an IPv6 /64): three of the largest
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 64  # one client address (an IPv6 /64): an SDK pools 10
FD_RESERVE = 128  # file descriptors kept for the store, the models, logs and TLS when connections are capped


def default_max_connections() -> int:
    """Connections held at once when ``--max-connections`` is not given: what the process may
    open (``RLIMIT_NOFILE``, soft) less ``FD_RESERVE``. It never shuts callers out sooner than
    running out of descriptors would; it keeps the descriptors the server itself needs."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, soft - FD_RESERVE)


def client_key(peername: object) -> str:
    """Whose connection this is, for ``--max-connections-per-client``: the peer's IPv4 address,
    or its IPv6 /64 (one host usually holds a whole /64, so single addresses would not limit it;
    an IPv4-mapped address counts as its IPv4 one). A link-local IPv6 address (fe80::/10) is its
    own key, with its interface: every host on every link shares the prefix fe80::/64, so a /64
    there would be one key for every such client. Anything else (no peer name, a Unix socket)
    shares one key."""
    import ipaddress

    host = peername[0] if isinstance(peername, tuple) and peername else None
    text, _, scope = str(host).partition("%")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return "?"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        if addr.is_link_local:
            return f"{addr}%{scope}" if scope else str(addr)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)
