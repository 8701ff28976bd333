"""Settings -> the door's decision components, built in one place so that a reload is a rebuild.

Everything derived from ``[matching]`` and ``[liveness]`` (the N-of-M policy, the tracker's
track age, the quality gate, the same-person re-check level, the liveness checks) is built here,
together; ``Daemon.reload`` swaps the whole set or keeps the old one. What needs a restart (the
models, the camera, MQTT, the collection id) is not in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from facelink.config import MatchingSettings, Settings
from facelink.models.engine import FaceEngine
from facelink.models.quality import QualityGate
from facelink.models.similarity import SAME_PERSON_SIMILARITY

from .decision import DecisionPolicy
from .liveness import LivenessChecker
from .tracker import Tracker


@dataclass(frozen=True)
class Components:
    policy: DecisionPolicy
    tracker: Tracker
    gate: QualityGate
    liveness: LivenessChecker | None
    same_person_cosine: float  # a decided track whose face falls below this is someone else


def quality_gate(m: MatchingSettings) -> QualityGate:
    """The frames a door decision may use (the evaluation tools judge as the door does with it)."""
    return QualityGate(min_face_px=m.min_face_px, max_abs_yaw=m.max_abs_yaw, max_abs_pitch=m.max_abs_pitch,
                       min_sharpness=m.min_sharpness, min_brightness=m.min_brightness)


def build_components(settings: Settings, engine: FaceEngine,
                     previous: Components | None = None) -> Components:
    """The components for ``settings``; with ``previous``, the people being followed, their
    decisions and the cooldowns carry over (nobody is granted twice because of a reload)."""
    m = settings.matching
    policy = DecisionPolicy(settings.mqtt.device_id, m.collection_id, engine.model_version,
                            m.similarity_threshold, m.frames_required, m.frames_window, m.cooldown_s)
    tracker = Tracker(max_age_s=m.track_max_age_s)
    gate = quality_gate(m)
    liveness = LivenessChecker.from_settings(settings.liveness, settings.models)
    same_person = engine.cosine_for(SAME_PERSON_SIMILARITY)
    if previous is not None:  # nothing here may fail: adopt() changes the running tracks
        policy.carry_cooldowns_from(previous.policy)
        tracker.adopt(previous.tracker)
        if liveness is not None and previous.liveness is not None:  # health counters keep counting
            liveness.fired, liveness.denied = previous.liveness.fired, previous.liveness.denied
            liveness.blinks = previous.liveness.blinks
    return Components(policy, tracker, gate, liveness, same_person)
