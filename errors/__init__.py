"""Typed errors shared by the engine, the collection store, the CLI and the daemon.

Names follow Amazon Rekognition's exception names so that a Rekognition user recognises them.
Every error carries an exit code; the CLI prints ``{"__type": Name, "Message": ...}`` and exits
with it.
"""

from __future__ import annotations

from collections.abc import Callable

#: How an actuator (the door's relay, an access-panel sender) reports that a GRANTED did not open
#: the door, at once or later from its own thread: called with the reason (the daemon publishes
#: ACTUATION_FAILED).
FailureReport = Callable[[str], None]


def ignore_failure(reason: str) -> None:
    """The default ``on_failure``: nobody is told (tests and tools that drive an actuator alone)."""
    return None


class FaceLinkError(Exception):
    """Base class of every error FaceLink raises on purpose."""

    code: str = "FaceLinkError"
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"__type": self.code, "Message": self.message}


class InvalidParameterException(FaceLinkError):
    code = "InvalidParameterException"
    exit_code = 2


class InvalidImageFormatException(FaceLinkError):
    code = "InvalidImageFormatException"
    exit_code = 3


class ImageTooLargeException(FaceLinkError):
    code = "ImageTooLargeException"
    exit_code = 3


class InvalidS3ObjectException(FaceLinkError):
    """Image.S3Object was given: an offline appliance has no S3 to read it from."""

    code = "InvalidS3ObjectException"
    exit_code = 3


class InvalidPaginationTokenException(FaceLinkError):
    code = "InvalidPaginationTokenException"
    exit_code = 2


class ResourceNotFoundException(FaceLinkError):
    code = "ResourceNotFoundException"
    exit_code = 4


class ResourceAlreadyExistsException(FaceLinkError):
    code = "ResourceAlreadyExistsException"
    exit_code = 5


class ConflictException(FaceLinkError):
    """The request conflicts with stored state (e.g. a FaceModelVersion mismatch)."""

    code = "ConflictException"
    exit_code = 6


class IdempotentParameterMismatchException(FaceLinkError):
    """A ClientRequestToken was reused with different parameters."""

    code = "IdempotentParameterMismatchException"
    exit_code = 6


class ModelError(FaceLinkError):
    """Model files are missing, fail verification or cannot be loaded."""

    code = "ModelError"
    exit_code = 7


class ConfigError(FaceLinkError):
    code = "ConfigError"
    exit_code = 8


class StoreError(FaceLinkError):
    """The collection database cannot be opened or written (locked, disk full, no extension)."""

    code = "StoreError"
    exit_code = 9


class InvalidSignatureException(FaceLinkError):
    """Signed data from the desk (an export file, a change set) is unsigned, signed by a key
    this appliance does not trust, or altered, or it is the wrong collection's (the message
    starts ``WRONG_COLLECTION:``): it is refused and changes nothing."""

    code = "InvalidSignatureException"
    exit_code = 10


class CameraError(FaceLinkError):
    """The door's camera source cannot be opened or stopped delivering frames (the reader
    reopens it with back-off; health says so)."""

    code = "CameraError"
    exit_code = 1


class RelayError(FaceLinkError):
    """The door's lock output could not be switched off after a pulse (a GPIO write failed), or a
    door command that started failed or was stopped: the lock may be held released. A GPIO relay
    keeps retrying; meanwhile the door publishes ERROR (at most every 30 s) and names the fault on
    health (``relay_stuck``) until the output is off (a door command: until one runs through)."""

    code = "RelayError"
    exit_code = 1


class PanelError(FaceLinkError):
    """The access-panel output cannot carry a GRANTED to the panel: the OSDP reader sends nothing
    (libosdp did not start again with the panel's key, or the key the panel sent was refused) or
    a Wiegand line is stuck. The door publishes ERROR (at most every 30 s) while it lasts and
    names it on health (``osdp_fault``, ``wiegand_stuck``)."""

    code = "PanelError"
    exit_code = 1


class WireError(Exception):
    """A refusal by ``facelink serve`` as the wire carries it: AWS's error code (``__type``), the
    message and the HTTP status. Raised by the SigV4 check before any operation runs, and for a
    request the endpoint cannot take (size, JSON, target); the typed errors above, raised inside
    an operation, are mapped to it by ``serve/app.py``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


EXIT_CODES: dict[str, int] = {
    cls.code: cls.exit_code
    for cls in (
        FaceLinkError,
        InvalidParameterException,
        InvalidPaginationTokenException,
        InvalidImageFormatException,
        ImageTooLargeException,
        InvalidS3ObjectException,
        ResourceNotFoundException,
        ResourceAlreadyExistsException,
        ConflictException,
        IdempotentParameterMismatchException,
        ModelError,
        ConfigError,
        StoreError,
        InvalidSignatureException,
        CameraError,
        RelayError,
    )
}
