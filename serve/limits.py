"""The endpoint's default limits, in one place: `facelink serve`'s options and the app use them."""

from __future__ import annotations

DEFAULT_BODY_TIMEOUT = 30.0  # seconds to receive a whole request body (10 MiB at ~3 Mbit/s)
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a connection to send a request head (facelink.serve.protocol)
DEFAULT_BODY_MEMORY_MIB = 64  # request bodies being read or processed, all together: six of the largest
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
