"""FaceLink settings: config/default.toml, then --config FILE, then FACELINK_* variables."""

from .settings import (
    AuditSettings,
    CameraSettings,
    DoorSettings,
    LivenessSettings,
    LoggingSettings,
    MatchingSettings,
    ModelSettings,
    MqttSettings,
    Settings,
    StoreSettings,
    check_panel_debounce,
    load_settings,
)

__all__ = [
    "AuditSettings",
    "CameraSettings",
    "DoorSettings",
    "LivenessSettings",
    "LoggingSettings",
    "MatchingSettings",
    "ModelSettings",
    "MqttSettings",
    "Settings",
    "StoreSettings",
    "check_panel_debounce",
    "load_settings",
]
