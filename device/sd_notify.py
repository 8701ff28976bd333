"""systemd's sd_notify protocol (READY, WATCHDOG, STATUS, STOPPING) without a dependency."""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` to $NOTIFY_SOCKET; a no-op (False) outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False
