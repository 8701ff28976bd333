"""`facelink-device`: run the door daemon. Exit codes: 0 stopped cleanly, 78 configuration or
setup problem (bad config, missing models or collection: systemd does not restart), 1 other
(also a stop during which a shutdown step failed: the steps after it still ran). A collection
that exists but cannot be read (a malformed row, a busy database) is no exit: the door runs
locked and says so (ERROR, health), retrying the read."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from facelink.config import load_settings
from facelink.errors import CameraError, FaceLinkError, StoreError

EX_CONFIG = 78

log = logging.getLogger("facelink.device")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facelink-device", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="settings file (TOML)")
    parser.add_argument("--source", default=None, help="override camera.source (file, folder, index, URL)")
    args = parser.parse_args(argv)
    if args.source:  # as the environment (above the file): a SIGHUP's re-read keeps it too
        os.environ["FACELINK_CAMERA__SOURCE"] = args.source
    try:
        settings = load_settings(args.config)
    except FaceLinkError as exc:
        print(f"facelink-device: {exc.message}", file=sys.stderr)
        return EX_CONFIG
    logging.basicConfig(level=settings.logging.level, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .daemon import Daemon
    from .door import make_relay

    try:
        relay = make_relay(settings.door)  # before the models load: a setup mistake fails fast
        daemon = Daemon(settings, config_path=args.config, relay=relay)
    except (StoreError, CameraError) as exc:  # may pass (a locked database, a camera replugged)
        log.error("cannot start: %s", exc.message)
        return 1
    except FaceLinkError as exc:
        log.error("cannot start: %s", exc.message)
        return EX_CONFIG
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop_requested.set())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop_requested.set())
    signal.signal(signal.SIGHUP, lambda *_: daemon.reload_requested.set())
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
