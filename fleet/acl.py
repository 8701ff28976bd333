"""The broker ACL (mosquitto ``acl_file``) for a desk, its audit logger and a listed set of doors.

Every rule names its user: there is no ``pattern`` line, because mosquitto applies a pattern to
every user, and a rule like ``pattern write <prefix>/%u/#`` made any broker account (the audit
logger's, an integration's) a door: it could publish a status under its own name, ask on its own
sync topic and be sent a signed snapshot of every face and credential, and read every change set.
Here only the listed doors can publish under ``<prefix>/<door>/`` or read the collections' change
sets, heads and their own replies. Topics are spelled by :mod:`facelink.mqtt.topics`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from facelink.errors import InvalidParameterException
from facelink.mqtt.topics import (
    CollectionTopics,
    DeviceTopics,
    all_alarms,
    all_decisions,
    all_health,
    all_panel_verdicts,
    all_status,
)

from .protocol import DEVICE_ID

# A user name the ACL can spell on one line and a door id that is one topic level.
_NAME = re.compile(DEVICE_ID)
# ``<prefix>/collections/`` holds the sync topics: a door by that name could publish on them.
RESERVED_DEVICE_IDS = frozenset({"collections"})


@dataclass(frozen=True)
class BrokerAcl:
    prefix: str
    doors: tuple[str, ...]
    desk_user: str = "facelink-desk"
    logger_user: str | None = "facelink-logger"
    shared_request_topic: bool = True  # fleet.accept_shared_request_topic: doors not yet upgraded

    def __post_init__(self) -> None:
        users = [self.desk_user] + ([self.logger_user] if self.logger_user else [])
        for name in users + list(self.doors):
            if not _NAME.fullmatch(name):
                raise InvalidParameterException(f"{name!r}: a broker user name here is 1-64 of A-Z a-z 0-9 _ . -")
        if not self.doors:
            raise InvalidParameterException("no doors: list each door's device_id (fleet.doors or --door)")
        for door in self.doors:
            if door in RESERVED_DEVICE_IDS:
                raise InvalidParameterException(f"{door!r} cannot be a door's device_id: <prefix>/{door}/ holds "
                                                "the collections' sync topics")
            if door in users:
                raise InvalidParameterException(f"{door!r} is the desk's or the logger's user name, not a door")
        if len(set(self.doors)) != len(self.doors):
            raise InvalidParameterException("a door is listed twice")

    def text(self) -> str:
        every = CollectionTopics(self.prefix, "+")
        lines = ["# FaceLink broker ACL (mosquitto acl_file), written by `facelink fleet acl`.",
                 "# Each door's MQTT user name is its device_id. No `pattern` lines: a pattern applies to",
                 "# every user, and would make any broker account a door.", "",
                 f"user {self.desk_user}",
                 f"topic write {every.changes}",
                 f"topic readwrite {every.head}",
                 f"topic write {every.base}/reply/#",
                 f"topic read {self.prefix.rstrip('/')}/+/sync/#",
                 f"topic read {all_status(self.prefix)}",
                 f"topic read {all_health(self.prefix)}"]
        if self.shared_request_topic:
            lines += ["# the shared request topic: only until fleet.accept_shared_request_topic = false",
                      f"topic read {every.request}"]
        if self.logger_user:
            lines += ["", f"user {self.logger_user}", f"topic read {all_decisions(self.prefix)}",
                      f"topic read {all_panel_verdicts(self.prefix)}", f"topic read {all_alarms(self.prefix)}"]
        for door in self.doors:
            own = DeviceTopics(self.prefix, door)
            lines += ["", f"user {door}",
                      f"topic write {own.base}/#",
                      f"topic read {own.credential}",
                      f"topic read {every.reply(door)}",
                      f"topic read {every.changes}",
                      f"topic read {every.head}"]
            if self.shared_request_topic:
                lines.append(f"topic write {every.request}")
        return "\n".join(lines) + "\n"


def broker_acl(prefix: str, doors: Sequence[str], desk_user: str | None, logger_user: str | None,
               shared_request_topic: bool) -> str:
    """The ACL file's text (``InvalidParameterException`` for a name it cannot write safely)."""
    return BrokerAcl(prefix, tuple(doors), desk_user or "facelink-desk", logger_user, shared_request_topic).text()
