"""Settings models, one small pydantic model per concern, read with pydantic-settings.

Precedence (lowest first): config/default.toml, the file given with --config (or the
FACELINK_CONFIG variable), FACELINK_* environment variables (nested with ``__``).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from facelink.enroll.validate import COLLECTION_ID, whole
from facelink.errors import ConfigError
from facelink.mqtt.topics import DEVICE_ID, RESERVED_DEVICE_IDS, TOPIC_PREFIX

from .access import CredentialSettings, FleetSettings, OsdpSettings, WiegandSettings
from .section import Section

DEFAULT_FILE = Path(__file__).with_name("default.toml")


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "facelink"


class ModelSettings(Section):
    models_dir: Path = Field(default_factory=lambda: data_dir() / "models",
                             description="Where `facelink models` writes and the engine reads models.")
    wheelhouse: Path | None = Field(None, description="Folder of pre-downloaded wheels for an air-gapped install (pip --no-index --find-links).")
    detector_backend: Literal["onnxruntime", "opencv"] = Field("onnxruntime", description="Runtime for YuNet.")
    embedder_backend: Literal["auto", "onnxruntime", "opencv"] = Field(
        "auto", description="Runtime for SFace. auto: onnxruntime (with SFace's PRelus as depthwise convs: measured fastest on CPU, same embeddings as OpenCV DNN); opencv: OpenCV DNN, the reference.")
    embedder_precision: Literal["fp32", "int8"] = Field(
        "fp32", description="onnxruntime SFace weights: fp32 (exact fold of the shipped int8bq weights) or int8 (static QDQ re-quantization: its own FaceModelVersion; speed and accuracy loss measured in README).")
    providers: list[str] = Field(["CPUExecutionProvider"], description="onnxruntime execution providers in order of preference; CPU is always appended.")
    threads: int = Field(0, ge=0, le=64, description="Inference threads (0: runtime default).")
    detect_max_side: int = Field(640, ge=128, le=4096, description="Frames are downscaled so their longer side is at most this before detection.")
    detect_score_threshold: float = Field(0.6, gt=0, lt=1, description="YuNet confidence (0-1) below which detections are dropped.")
    presence_gate: Literal["none", "blazeface"] = Field(
        "none", description="blazeface: a TFLite BlazeFace pass first; frames without a face skip YuNet and SFace (needs `facelink models --tflite` and ai-edge-litert or tflite-runtime).")


class StoreSettings(Section):
    database: Path = Field(default_factory=lambda: data_dir() / "facelink.db", description="The SQLite collection database.")
    keep_thumbnails: bool = Field(False, description="Opt-in: keep a small face thumbnail per indexed face for the security desk. Off: no image bytes are stored.")
    group_access: bool = Field(False, description="Biometric and audit files are 0600 in 0700 folders; true: 0640/0750, readable by the owning group.")


class MatchingSettings(Section):
    collection_id: str = Field("door", pattern=whole(COLLECTION_ID), description="Collection the door matches against.")
    similarity_threshold: float = Field(99.0, ge=0, le=100, description="Minimum Similarity (0-100) for GRANTED. The door refuses one at which more than 1 in 100 comparisons of two different people may match, at the 95 % upper limit (45.8 with the shipped calibration).")
    max_stranger_rate: float = Field(1e-4, gt=0, le=1, description="Warn (describe-collection, daemon log and health) when the expected rate of a stranger being GRANTED per attempt, from the calibration and the collection's size, exceeds this.")
    min_face_px: int = Field(60, ge=16, description="Faces narrower than this (pixels) are DENIED_LOW_QUALITY.")
    max_abs_yaw: float = Field(35.0, gt=0, le=90, description="Largest |yaw| in degrees accepted.")
    max_abs_pitch: float = Field(30.0, gt=0, le=90, description="Largest |pitch| in degrees accepted.")
    min_sharpness: float = Field(8.0, ge=0, le=100, description="Smallest Sharpness (0-100) accepted.")
    min_brightness: float = Field(15.0, ge=0, le=100, description="Smallest Brightness (0-100) accepted.")
    frames_required: int = Field(3, ge=1, description="N: frames of one track that must agree (same user at or above the threshold) before a decision.")
    frames_window: int = Field(5, ge=1, description="M: the window of a track's most recent frames that N is counted in.")
    cooldown_s: float = Field(10.0, ge=0, le=86400, description="After a decision for a user/track, the same decision is not repeated for this long.")
    track_max_age_s: float = Field(1.5, ge=0, le=3600, description="A face unseen for this long ends its track (the next sighting is a new person).")
    reload_interval_s: float = Field(1.0, gt=0, le=60, description="How often the daemon picks up collection changes (a deleted face or user stops matching within this + 1 s).")
    mode: Literal["face", "card_and_face", "card_or_face"] = Field(
        "face", description="face: 1:N face match. card_and_face: a badge read starts a 1:1 check against that user's faces (GRANTED only if the face matches that user within card_window_s). card_or_face: either factor alone.")
    card_window_s: float = Field(10.0, gt=0, le=120, description="card_and_face: how long after a badge read the face must match.")

    @field_validator("frames_window")
    @classmethod
    def _window_covers_required(cls, v: int, info) -> int:
        if v < info.data.get("frames_required", 1):
            raise ValueError("frames_window must be >= frames_required")
        return v


class LivenessSettings(Section):
    enabled: bool = Field(True, description="Run presentation-attack checks before granting (DENIED_SPOOF).")
    frozen_feed: bool = Field(True, description="FROZEN_FEED: deny a face that is a still image (injected file or stream, stuck camera): aligned face crops compared frame to frame.")
    frozen_feed_min_change: float = Field(0.42, ge=0, le=50, description="FROZEN_FEED: a face is live when two of its last three registered-crop changes (coarse residual after matching the tone, grey levels, noise discounted) reach this, else a still image (measured, second largest of three: stills <= 0.35, exposure-hunting stills <= 0.41, live >= 0.366 with 1 of 316 windows below 0.42; see Presentation attacks).")
    require_blink: bool = Field(False, description="GRANTED only after a blink within blink_window_s, else DENIED_SPOOF (NO_BLINK). Stops printed photos and stills on a screen, NOT a replayed video. Needs `facelink models --tflite`.")
    blink_window_s: float = Field(5.0, gt=0, le=60, description="How long a track may wait for a blink (seconds from its first face-mesh reading).")
    blink_close_ratio: float = Field(0.7, gt=0, lt=1, description="A blink: eye aspect ratio below this fraction of the track's own open-eye baseline, then back above 0.85 of it within 0.8 s.")
    depth_check: bool = Field(False, description="FLAT_FACE: needs camera.source = \"realsense\" (or \"realsense-ir\"); a face whose depth is not face-shaped (relief below min_depth_relief_mm, no nose in front of the cheeks, no bump at the nose tip, or a cut edge: README, FLAT_FACE) is DENIED_SPOOF; a face without depth, or whose depth is too noisy to tell (further than ~1 m from a RealSense), is never granted.")
    min_depth_relief_mm: float = Field(20.0, gt=0, le=100, description="FLAT_FACE: smallest depth relief (mm) of a face beyond a fitted quadratic surface; synthetic planes, tilted planes and bent prints measured 6 (sensor noise 1.5 mm), mesh-shaped faces 26-38.")


class CameraSettings(Section):
    source: str = Field("0", description="picamera2 | a V4L2 index (0) | rtsp://, http:// URL | a GStreamer pipeline | a video file | a folder of images.")
    loop: bool = Field(False, description="Replay a video file/folder forever (demos).")
    max_fps: float = Field(15.0, ge=1, le=240, description="Frames processed per second at most; older frames are dropped. A replayed folder's images (and a video that states no plausible frame rate) are timed at this rate.")
    reconnect_max_backoff_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between attempts to reopen a lost camera.")
    stall_s: float = Field(10.0, ge=1, le=600, description="A live camera that delivered frames and then none for this long (a read that hangs: a wedged V4L2 device, an IP camera whose stream stopped with its connection open) is stalled: health camera_connected false, an ERROR, and the camera is opened again on a new reader thread (the hung read is abandoned). An attempt to open it that brings no frame for 60 s (or this, if longer) is stalled too. Files and folders are never stalled.")


class MqttSettings(Section):
    host: str = Field("127.0.0.1", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    device_id: str = Field("door-1", pattern=DEVICE_ID, description="This door's id; part of every topic.")
    topic_prefix: str = Field("facelink", pattern=TOPIC_PREFIX, description="Topics are <prefix>/<device_id>/{decision,status,health}.")
    keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keepalive (at most 65535: the CONNECT packet has 16 bits for it).")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(None, description="Broker password (never logged).")
    tls_ca: Path | None = Field(None, description="CA certificate: enables TLS.")
    tls_cert: Path | None = Field(None, description="Client certificate for mutual TLS.")
    tls_key: Path | None = Field(None, description="Client key for mutual TLS.")
    insecure_plaintext: bool = Field(False, description="Allow a password without TLS (no tls_ca) to a broker that is not on this machine: the password and every message cross the network in clear (a WARNING at every start). Off: refused.")
    outbox: Path | None = Field(None, description="Store-and-forward outbox database (default: beside the collection database).")
    publish_window: int = Field(100, ge=1, le=1000, description="Outbox events in flight at once (published, PUBACK not yet received). 1 waits for each PUBACK before the next (slow over a long link); each event still leaves the outbox only after its own PUBACK.")
    outbox_max: int = Field(100000, ge=10, description="Outbox bound in events: when full, the oldest event is dropped, counted on the health topic (outbox_dropped) and logged at ERROR.")
    health_interval_s: float = Field(30.0, gt=0, le=3600, description="Period of <prefix>/<device>/health.")
    ha_discovery: bool = Field(False, description="Publish Home Assistant MQTT discovery config.")

    @model_validator(mode="after")
    def _tls_and_auth_complete(self) -> MqttSettings:
        if self.tls_cert is not None and self.tls_key is None:
            raise ValueError("tls_key: required with tls_cert (a client certificate needs its key)")
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_cert: required with tls_key")
        if self.tls_cert is not None and self.tls_ca is None:
            raise ValueError("tls_ca: required with tls_cert (client certificates need TLS)")
        if self.password is not None and not self.username:
            raise ValueError("username: required with password")
        if self.password is not None and self.tls_ca is None and not self.insecure_plaintext \
                and not is_loopback(self.host):
            raise ValueError(f"tls_ca: required with a password to a broker not on this machine ({self.host}): "
                             "without TLS the password crosses the network in clear; set tls_ca (or "
                             "insecure_plaintext = true)")
        if self.device_id in RESERVED_DEVICE_IDS:  # <prefix>/collections/ holds the sync topics
            raise ValueError("device_id: 'collections' is reserved (the collections' sync topics)")
        for key in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, key)
            if path is not None and not path.expanduser().is_file():
                raise ValueError(f"{key}: file not found: {path}")
        return self


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): a connection that never leaves the machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DoorSettings(Section):
    relay: Literal["none", "gpio", "command"] = Field("none", description="What GRANTED does to the lock: nothing, pulse a GPIO pin (gpiozero), or run a command.")
    gpio_pin: int = Field(17, ge=0, le=40, description="BCM pin of the relay.")
    command: str = Field("", description="Command run on GRANTED (relay=command); FACELINK_USER_ID is set.")
    pulse_s: float = Field(3.0, gt=0, le=60, description="How long the lock stays released.")
    output: Literal["none", "osdp", "wiegand"] = Field("none", description="What GRANTED sends to an access panel: nothing, an OSDP CardRead ([osdp]) or a Wiegand pulse train ([wiegand]) with the user's credential.")

    @model_validator(mode="after")
    def _command_given(self) -> DoorSettings:
        if self.relay == "command" and not self.command.strip():
            raise ValueError("command: required when relay = \"command\"")
        return self


class SyncSettings(Section):
    enabled: bool = Field(False, description="Door: follow the desk's collection over MQTT (signed change sets, facelink.sync/1; README \"Fleet sync\"). Needs fleet.trusted_keys.")
    collection_id: str | None = Field(None, pattern=whole(COLLECTION_ID), description="Door: the collection to follow; if set, it must be matching.collection_id (the door follows what it matches).")
    max_staleness_s: float = Field(300.0, gt=0, le=86400, description="Door: a copy not confirmed up to date (a newer signed head at the applied seq) for longer is stale (health sync.<C>.stale). Keep it several times the desk's fleet.heartbeat_s.")
    on_stale: Literal["deny", "keep"] = Field("deny", description="Door: while stale, deny (every decision but a face's DENIED_SPOOF or DENIED_LOW_QUALITY, which would open the door on no copy, becomes ERROR STALE_COLLECTION; the door stays locked: a revoked badge cannot open it while the door is cut off from the desk) or keep (keep deciding on the last copy applied; health says stale). Either way, a decision made before the matcher loaded a change set applied is not published as made (README \"Staleness\").")
    request_retry_s: float = Field(5.0, gt=0, le=3600, description="Door: an unanswered sync request (missing range, snapshot) is sent again after this, doubling up to 60 s.")
    challenge_every_s: float = Field(3600.0, ge=0, le=86400, description="Door: the copy is fresh only while the desk answered one of this door's freshness challenges within this time (asked from half of it on; the last answer is kept across restarts), so heads held back a little longer each time can gain at most 1 % of it. Not set, it is the larger of 3600 and max_staleness_s (a desk outage the site rides out stays one); set below max_staleness_s, a door is stale that long after the desk's last answer. A desk older than this release does not answer: upgrade the desk first, or set 0 (heads alone confirm; README \"Held-back heads\").")

    @field_validator("challenge_every_s")
    @classmethod
    def _challenge_every_s(cls, v: float) -> float:
        if 0 < v < 60:
            raise ValueError("0 (off) or at least 60 s: the door asks from half of it on")
        return v

    @model_validator(mode="after")
    def _challenge_period_covers_staleness(self) -> SyncSettings:
        # left at its default, it never cuts the desk outage a site rides out (max_staleness_s):
        # a door set for hours without the desk was stale 30-60 min into one (found in review)
        if "challenge_every_s" not in self.model_fields_set and self.challenge_every_s < self.max_staleness_s:
            self.challenge_every_s = self.max_staleness_s
        return self


class AuditSettings(Section):
    database: Path = Field(default_factory=lambda: data_dir() / "audit.db", description="facelink-logger's audit database (decisions and quarantined messages).")
    jsonl: Path | None = Field(None, description="Also append every recorded decision to this JSON-lines file.")
    client_id: str = Field("facelink-logger", pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="MQTT client id of the logger's persistent session (the broker keeps its QoS 1 messages while it is down).")


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level (logs go to stdout/journald).")


def check_panel_debounce(door: DoorSettings, osdp: OsdpSettings, matching: MatchingSettings) -> None:
    """A ValueError where the OSDP debounce would hold back a GRANTED the cooldown lets through
    (the door stays shut, ACTUATION_FAILED): at start and on every reload (the reader keeps the
    debounce it started with)."""
    debounce = osdp.debounce_s
    if door.output == "osdp" and matching.mode != "card_and_face" and debounce > matching.cooldown_s:
        raise ValueError(
            f"osdp.debounce_s: {debounce:g} s is longer than matching.cooldown_s ({matching.cooldown_s:g} s): "
            "a user granted again after the cooldown would not be sent to the panel (the door "
            "stays shut, ACTUATION_FAILED); keep it at most the cooldown")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACELINK_", env_nested_delimiter="__",
                                      extra="forbid")

    models: ModelSettings = ModelSettings()
    store: StoreSettings = StoreSettings()
    matching: MatchingSettings = MatchingSettings()
    liveness: LivenessSettings = LivenessSettings()
    camera: CameraSettings = CameraSettings()
    mqtt: MqttSettings = MqttSettings()
    door: DoorSettings = DoorSettings()
    osdp: OsdpSettings = OsdpSettings()
    wiegand: WiegandSettings = WiegandSettings()
    credentials: CredentialSettings = CredentialSettings()
    fleet: FleetSettings = FleetSettings()
    sync: SyncSettings = SyncSettings()
    audit: AuditSettings = AuditSettings()
    logging: LoggingSettings = LoggingSettings()

    @model_validator(mode="after")
    def _sync_follows_what_is_matched(self) -> Settings:
        if self.sync.collection_id not in (None, self.matching.collection_id):
            raise ValueError(
                f"sync.collection_id: {self.sync.collection_id!r} is not matching.collection_id "
                f"({self.matching.collection_id!r}): the door would follow one collection and open "
                "for another, where a revocation never arrives; leave it unset")
        check_panel_debounce(self.door, self.osdp, self.matching)
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings,
                                   env_settings, dotenv_settings, file_secret_settings
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = settings_cls.model_config.get("toml_file") or [DEFAULT_FILE]
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=files))


def _expand(settings: Settings) -> Settings:
    settings.models.models_dir = settings.models.models_dir.expanduser()
    settings.store.database = settings.store.database.expanduser()
    settings.audit.database = settings.audit.database.expanduser()
    for key in ("tls_ca", "tls_cert", "tls_key"):  # as checked: `~/ca.crt` passed the check, then
        path = getattr(settings.mqtt, key)           # was not found by the MQTT client (ConfigError)
        if path is not None:
            setattr(settings.mqtt, key, path.expanduser())
    if settings.mqtt.outbox is None:
        settings.mqtt.outbox = settings.store.database.with_name("outbox.db")
    return settings


def describe(exc: ValidationError) -> str:
    """One line naming the key: ``invalid setting mqtt.tls_key: required with tls_cert``."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    field, sep, rest = msg.partition(": ")
    if sep and all(p.isidentifier() for p in field.split(".")) and err["type"] == "value_error" \
            and len(err["loc"]) <= 1:  # a cross-field check names its own field
        key, msg = f"{key}.{field}" if key else field, rest
    return f"invalid setting {key}: {msg}"


def misspelt_variables(environ: dict[str, str] | os._Environ) -> list[str]:
    """FACELINK_* variables meant as a setting that pydantic-settings would silently pass over:
    one underscore after a section (FACELINK_LIVENESS_REQUIRE_BLINK) or an unknown section before
    the double one (FACELINK_LIVENES__REQUIRE_BLINK). Other FACELINK_* names (FACELINK_CONFIG,
    tools' own) are left alone."""
    sections = [name.upper() for name in Settings.model_fields]
    bad = []
    for name in environ:
        rest = name.upper().removeprefix("FACELINK_")
        if rest == name.upper():
            continue
        section, sep, _ = rest.partition("__")
        if (sep and section not in sections) or (not sep and any(rest.startswith(f"{s}_") for s in sections)):
            bad.append(name)
    return sorted(bad)


def load_settings(config_file: Path | str | None = None, **overrides) -> Settings:
    """Read the settings; any problem is one ``ConfigError`` line naming the key."""
    for name in misspelt_variables(os.environ):  # a typo must not silently change nothing
        raise ConfigError(f"invalid setting {name}: no such setting (environment variables are "
                          "FACELINK_<SECTION>__<KEY>, e.g. FACELINK_LIVENESS__REQUIRE_BLINK)")
    config_file = config_file or os.environ.get("FACELINK_CONFIG") or None
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(f"config file not found: {config_file}")
    files = [DEFAULT_FILE] + ([Path(config_file)] if config_file is not None else [])
    bound = type("BoundSettings", (Settings,),
                 {"model_config": {**Settings.model_config, "toml_file": files}})
    try:
        return _expand(bound(**overrides))
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
    except (ValueError, OSError) as exc:  # TOML syntax errors, unreadable files
        raise ConfigError(f"cannot read configuration: {exc}") from None
