"""The endpoint's default limits, in one place: `facelink serve`'s options and the app use them."""

from __future__ import annotations

DEFAULT_BODY_TIMEOUT = 30.0  # seconds to receive a whole request body (10 MiB at ~3 Mbit/s)
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a connection to send a request head (facelink.serve.protocol)
DEFAULT_BODY_MEMORY_MIB = 64  # request bodies being read or processed, all together: six of the largest
