"""The broker ACL (mosquitto ``acl_file``) for a desk, its audit logger and the doors it serves.

Every rule names its user: there is no ``pattern`` line, because mosquitto applies a pattern to
every user, and a rule like ``pattern write <prefix>/%u/#`` made any broker account (the audit
logger's, an integration's) a door: it could publish a status under its own name, ask on its own
sync topic and be sent a signed snapshot of every face and credential, and read every change set.
Here only a listed door can publish under ``<prefix>/<door>/``, and it reads the change sets,
heads and its own replies of the collections it is listed for, and no others. Topics are spelled
by :mod:`facelink.mqtt.topics`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from facelink.enroll.validate import COLLECTION_ID
from facelink.errors import InvalidParameterException
from facelink.mqtt.topics import (
    DEVICE_ID,
    HA_PREFIX,
    RESERVED_DEVICE_IDS,
    TOPIC_PREFIX,
    CollectionTopics,
    DeviceTopics,
    all_alarms,
    all_decisions,
    all_health,
    all_panel_verdicts,
    all_status,
)

# A user name the ACL can spell on one line and a door id that is one topic level.
_NAME = re.compile(DEVICE_ID)
_PREFIX = re.compile(TOPIC_PREFIX)


def check_doors(doors: Mapping[str, Sequence[str]], published: Sequence[str] | None = None,
                service_users: Sequence[str] = ()) -> None:
    """``InvalidParameterException`` unless ``doors`` (device id -> the collections it is sent) is
    a non-empty map of safe device ids, each with at least one collection, all of them published
    (when ``published`` is given), none of them a service's user name."""
    if not doors:
        raise InvalidParameterException("fleet.doors: list each door's device_id and the collections it is sent, "
                                        'e.g. door-lobby = ["staff"]')
    for door, collections in doors.items():
        if not _NAME.fullmatch(door):
            raise InvalidParameterException(f"fleet.doors: {door!r}: a device id is 1-64 of A-Z a-z 0-9 _ . -")
        if door in RESERVED_DEVICE_IDS:
            raise InvalidParameterException(f"fleet.doors: {door!r} cannot be a door's device_id: <prefix>/{door}/ "
                                            "holds the collections' sync topics")
        if door in service_users:
            raise InvalidParameterException(f"fleet.doors: {door!r} is the desk's or the logger's user name, not a door")
        if not collections or len(set(collections)) != len(collections):
            raise InvalidParameterException(f"fleet.doors: {door!r} needs its collections, each once")
        for c in collections:
            if not COLLECTION_ID.fullmatch(c):
                raise InvalidParameterException(f"fleet.doors: {door!r}: {c!r} is not a CollectionId")
            if published is not None and c not in published:
                raise InvalidParameterException(f"fleet.doors: {door!r} is listed for {c!r}, which is not in "
                                                "fleet.publish")


@dataclass(frozen=True)
class BrokerAcl:
    prefix: str
    doors: Mapping[str, Sequence[str]]  # device id -> the collections it is sent (fleet.doors)
    desk_user: str = "facelink-desk"
    logger_user: str | None = "facelink-logger"
    shared_request_topic: bool = True  # fleet.accept_shared_request_topic: doors not yet upgraded

    def __post_init__(self) -> None:
        users = [self.desk_user] + ([self.logger_user] if self.logger_user else [])
        for name in users:
            if not _NAME.fullmatch(name):
                raise InvalidParameterException(f"{name!r}: a broker user name here is 1-64 of A-Z a-z 0-9 _ . -")
        if len(set(users)) != len(users):
            raise InvalidParameterException("the desk and the logger need user names of their own")
        if not _PREFIX.fullmatch(self.prefix):
            raise InvalidParameterException(f"{self.prefix!r} is not a topic prefix (mqtt.topic_prefix)")
        check_doors(self.doors, service_users=users)

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
        for door, collections in self.doors.items():
            own = DeviceTopics(self.prefix, door)
            lines += ["", f"user {door}",
                      f"topic write {own.base}/#",
                      f"topic read {own.credential}",
                      f"topic write {HA_PREFIX}/+/facelink_{door}/#"]
            for c in collections:
                topics = CollectionTopics(self.prefix, c)
                lines += [f"topic read {topics.changes}", f"topic read {topics.head}",
                          f"topic read {topics.reply(door)}"]
                if self.shared_request_topic:
                    lines.append(f"topic write {topics.request}")
        return "\n".join(lines) + "\n"


def broker_acl(prefix: str, doors: Mapping[str, Sequence[str]], desk_user: str | None, logger_user: str | None,
               shared_request_topic: bool) -> str:
    """The ACL file's text (``InvalidParameterException`` for a name it cannot write safely)."""
    return BrokerAcl(prefix, dict(doors), desk_user or "facelink-desk", logger_user, shared_request_topic).text()
