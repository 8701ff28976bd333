"""The door daemon: camera thread -> pipeline -> outbox -> MQTT pump, with health, watchdog,
fail-closed error handling, SIGHUP reload and a clean SIGTERM shutdown."""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelink.access.badges import BadgeSources
from facelink.access.osdp_verdicts import PanelOutput, PanelVerdict
from facelink.access.panel import make_panel_link
from facelink.config import Settings, check_panel_debounce
from facelink.enroll.store import Store
from facelink.errors import (
    CameraError,
    ModelError,
    PanelError,
    RelayError,
    ResourceNotFoundException,
    StoreError,
)
from facelink.models.blazeface import BlazeFaceDetector
from facelink.models.engine import FaceEngine
from facelink.models.manifest import verify_model
from facelink.models.risk import check_door_threshold, log_stranger_risk
from facelink.models.runtime import TFLiteBackend, limit_blas_threads
from facelink.mqtt import wall_clock
from facelink.mqtt.client import Transport, door_client
from facelink.mqtt.outbox import Outbox, publish_directly, put_or_publish
from facelink.mqtt.pump import OutboxPump
from facelink.mqtt.topics import DeviceTopics

from .actuation import Actuation
from .assembly import build_components
from .camera import CameraReader, Frame
from .clock import DecisionClock
from .decision import ACTUATION_FAILED, ERROR, GRANTED, Decision
from .door import DoorRelay, make_relay
from .factors import Factors
from .heap import release_free_heap, rss_mib
from .matcher import UserIndex
from .panel_records import PanelRecords
from .pipeline import DecidedThenFailed, DoorPipeline, describe_error
from .sd_notify import notify
from .stale_gate import StaleGate

if TYPE_CHECKING:
    from .sync import DoorSync

log = logging.getLogger(__name__)

RESTART_ONLY_MATCHING = ("mode", "card_window_s")  # SIGHUP refuses a change of these
ERROR_REPEAT_S = 30.0  # the same error is published at most this often (each is still logged)
ERROR_KEYS_MAX = 64  # distinct errors remembered for that (least recently seen forgotten first)
FAULT_AGAIN_S = 5.0  # a fault that cleared and came back is said at once, but at most this often


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    decisions: int = 0
    errors: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=1000))
    decision_latencies_ms: deque = field(default_factory=lambda: deque(maxlen=1000))
    _window: deque = field(default_factory=lambda: deque(maxlen=100))

    def frame_done(self, captured_at: float, now: float) -> None:
        self.frames += 1
        self.latencies_ms.append((now - captured_at) * 1000.0)
        self._window.append(now)

    def fps(self) -> float:
        w = self._window
        return (len(w) - 1) / (w[-1] - w[0]) if len(w) > 1 and w[-1] > w[0] else 0.0


def presence_gate(ms) -> BlazeFaceDetector | None:
    """The optional TFLite BlazeFace presence gate (models.presence_gate)."""
    if ms.presence_gate != "blazeface":
        return None
    path = Path(ms.models_dir) / "blazeface_short_range.tflite"
    if not path.is_file():
        raise ModelError(f"{path} is missing: run `facelink models --tflite`")
    verify_model(ms.models_dir, path.name)
    return BlazeFaceDetector(TFLiteBackend(path, threads=ms.threads))


def error_key(exc: BaseException) -> str:
    """What makes two errors "the same" for ERROR_REPEAT_S: the type and the message's first line
    (bounded), not the full text (which may carry ids, paths or counters)."""
    name = type(exc).__name__
    text = describe_error(exc).removeprefix(name).removeprefix(": ")  # never raises (a broken __str__: "")
    first = text.splitlines()[0] if text else ""
    return f"{name}: {first[:120]}"


RELOADED = ("matching", "liveness")  # the sections a SIGHUP applies (less matching.collection_id)


def _differences(running: Settings, fresh: Settings, sections: list[str]) -> list[tuple[str, Any, Any]]:
    """(``section.key``, running value, re-read value) for each key of ``sections`` that differs."""
    out = []
    for section in sections:
        old, new = getattr(running, section), getattr(fresh, section)
        out += [(f"{section}.{k}", getattr(old, k), getattr(new, k))
                for k in type(new).model_fields if getattr(old, k) != getattr(new, k)]
    return out


def not_reloaded(running: Settings, fresh: Settings) -> list[str]:
    """The keys whose value in a re-read file differs from the running one but that a SIGHUP does
    not apply (everything outside [matching] and [liveness], and the collection id)."""
    keys = ["matching.collection_id"] if fresh.matching.collection_id != running.matching.collection_id else []
    return keys + [k for k, _, _ in _differences(running, fresh, [s for s in Settings.model_fields if s not in RELOADED])]


def reloaded(running: Settings, fresh: Settings) -> list[str]:
    """What a SIGHUP changes, ``section.key old -> new`` ([matching] and [liveness]): said in the
    reload's log line, so that a lowered threshold or liveness turned off is on record by name."""
    return [f"{k} {old!r} -> {new!r}" for k, old, new in _differences(running, fresh, list(RELOADED))]


class Daemon:
    def __init__(self, settings: Settings, *, config_path: Path | None = None,
                 engine: FaceEngine | None = None, transport: Transport | None = None,
                 relay: DoorRelay | None = None, live: bool | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.blas_threads = limit_blas_threads(1)  # the models and the int8 scan own the cores
        self.engine = engine or FaceEngine.from_settings(settings.models)
        check_door_threshold(self.engine.calibration, settings.matching.similarity_threshold)  # exit 78
        self.store = Store(settings.store.database, group_access=settings.store.group_access)
        self.index = UserIndex(self.store, settings.matching.collection_id, self.engine.model_version)
        try:
            self.index.load()
        except ResourceNotFoundException:
            if not settings.sync.enabled:
                raise
            log.warning("collection %s is not here yet: nobody is granted until the desk's snapshot "
                        "arrives", settings.matching.collection_id)
        except StoreError as exc:  # a malformed row, a database busy or unreadable for now: the door
            # runs locked and says why (ERROR, health collection_error), retrying the full read every
            # reload_interval_s, instead of exiting into a restart loop that ends at systemd's start
            # limit with the door silent (the desk's fix, or a snapshot, makes it usable again)
            log.error("collection %s unusable at start: nobody is granted until a full read succeeds "
                      "(retried every %s s): %s", settings.matching.collection_id,
                      settings.matching.reload_interval_s, exc.message)
        self.pipeline = DoorPipeline(self.engine, self.index, build_components(settings, self.engine),
                                     presence_gate(settings.models))
        m = settings.matching
        if m.mode != "face":  # card modes: badge reads from facelink.access.badges
            self.pipeline.factors = Factors(m.mode, m.card_window_s,
                                            lambda c: self.store.user_by_credential(m.collection_id, c))
        self.badges = BadgeSources(settings)
        self.badges.start()  # before anything that holds a thread: a bad reader fails fast (exit 78)
        self.topics = DeviceTopics(settings.mqtt.topic_prefix, settings.mqtt.device_id)
        self.outbox = Outbox(settings.mqtt.outbox, settings.mqtt.outbox_max,
                             group=settings.store.group_access)
        self.sync: DoorSync | None = None
        if settings.sync.enabled:  # imported here: a door without a desk never loads the fleet's crypto (~8 MiB)
            from .sync import DoorSync

            self.sync = DoorSync(settings, self.engine.model_version, self.outbox, self.topics)
            self.pipeline.stale = StaleGate(self.sync, self.pipeline.factors)
        self.transport = transport or door_client(
            settings.mqtt, subscriptions=self.sync.subscriptions() if self.sync else (),
            on_message=self.sync.on_message if self.sync else None, persistent=self.sync is not None)
        self.pump = OutboxPump(self.outbox, self.transport, window=settings.mqtt.publish_window)
        self.relay = relay or make_relay(settings.door)
        self.panel_records = PanelRecords(self.outbox, self.transport, self.topics.panel,
                                          settings.mqtt.device_id, self.relay)
        self.panel = make_panel_link(settings, self.store, on_verdict=self._record_panel_verdict,
                                     on_output=self._panel_output)
        self.camera = CameraReader(settings.camera.source, loop=settings.camera.loop,
                                   max_backoff_s=settings.camera.reconnect_max_backoff_s,
                                   max_fps=settings.camera.max_fps, live=live, stall_s=settings.camera.stall_s)
        self.clock = DecisionClock(replay=self.camera.replays)
        self.stats = Stats()
        self.heap_released_mib: float | None = None  # set at start (run)
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self._last_error: OrderedDict[str, float] = OrderedDict()  # error_key -> last published
        self._next_health = 0.0
        # output -> (when its fault was last published as ERROR, whether it cleared since)
        self._fault_said: dict[str, tuple[float, bool]] = {}
        self.stranger_risk = log_stranger_risk(self.engine.calibration, settings.matching, len(self.index))

    # -- decisions -------------------------------------------------------------------------
    def emit(self, decision: Decision, now: float | None = None, made_on: int | None = None) -> None:
        """Outbox first (durable), then the relay: a decision that can't be recorded opens nothing.
        With sync, the stale gate says what to publish for it first (:class:`StaleGate`: its ERROR
        STALE_COLLECTION, or nothing; ``now``: the decision clock's time of the step that made it,
        ``made_on``: the copy that step began on, :meth:`StaleGate.mark`)."""
        made, stale = decision, self.pipeline.stale
        if stale is not None:
            decision = stale.gate(self.pipeline.components, decision, now, made_on)
            if decision is None:
                return
        try:
            self.outbox.put(decision.event_id, self.topics.decision, decision.payload())
        except Exception:
            if decision is not made:  # the gate's ERROR, not recorded
                stale.refused(self.pipeline.components, made, decision, now)
            raise
        self.stats.decisions += 1
        log.info("decision %s user=%s similarity=%s track=%s event=%s", decision.decision, decision.user_id,
                 decision.similarity, decision.track_id, decision.event_id)
        if decision.decision == GRANTED:
            # the panel is told first; a refusal before sending is all that says it was not told
            act = Actuation(decision, self.relay.opens_door, self.actuation_failed, self.panel_records.send_failed,
                            self.panel_records.not_sent, panel_told=self.panel.sends)
            try:
                not_sent = self.panel.on_decision(decision, on_failure=act.panel_failed, on_sending=act.sending)
            except Exception as exc:  # noqa: BLE001 - the panel link's failure is reported, the loop goes on
                log.exception("access panel output failed")
                not_sent = f"access panel: {type(exc).__name__}: {exc}"
            if not_sent is not None:
                act.panel_refused(not_sent)
            try:
                self.relay.pulse(decision.user_id, on_failure=act.relay_failed, event_id=decision.event_id)
            except Exception as exc:  # noqa: BLE001 - reported, the loop goes on
                act.relay_failed(f"{type(exc).__name__}: {exc}")

    def _record_panel_verdict(self, verdict: PanelVerdict) -> None:
        """The panel's answer to a card read, published beside FaceLink's decision (via the outbox)."""
        self.panel_records.verdict(verdict)

    def _panel_output(self, output: PanelOutput) -> None:
        """The access panel switched the door's output on, or off at once (OSDP; the reader's
        output thread): recorded (``facelink.panel-output/1``) before the relay opens for it, and
        after a running pulse was ended for an off (``PanelRecords.output``)."""
        self.panel_records.output(output)

    def actuation_failed(self, granted: Decision, reason: str) -> None:
        """The relay failed after GRANTED: a follow-up event says the door did not open.
        Called from the pipeline thread or the relay's own thread (the outbox is thread-safe)."""
        follow_up = Decision(ACTUATION_FAILED, granted.device_id, granted.collection_id, granted.model_version,
                             granted.threshold, user_id=granted.user_id, track_id=granted.track_id,
                             refers_to=granted.event_id, reason=reason[:300], mode=granted.mode,
                             factors=granted.factors)
        log.error("door did not open for %s (event %s): %s", granted.user_id, granted.event_id, reason)
        put_or_publish(self.outbox, self.transport, follow_up.event_id, self.topics.decision, follow_up.payload(),
                       f"the ACTUATION_FAILED of GRANTED {granted.event_id}")

    def fail_closed(self, exc: BaseException, now: float | None = None, *, limited: bool = True) -> None:
        """An internal error: the door stays locked and an ERROR decision is published (the same
        error at most every ERROR_REPEAT_S, counted from ``now``: the caller's clock reading;
        ``limited=False``: the caller times its repeats, as ``_faults`` does)."""
        self.stats.errors += 1
        reason = describe_error(exc)[:300]  # never raises: an error that cannot be rendered is still an ERROR
        log.error("pipeline error, door stays locked: %s", reason, exc_info=exc)
        now, key = time.monotonic() if now is None else now, error_key(exc)
        if limited and now - self._last_error.get(key, -1e9) < ERROR_REPEAT_S:
            return
        self._last_error[key] = now
        self._last_error.move_to_end(key)
        while len(self._last_error) > ERROR_KEYS_MAX:
            self._last_error.popitem(last=False)
        p = self.pipeline.components.policy
        decision = Decision(ERROR, p.device_id, p.collection_id, p.model_version, p.threshold, reason=reason)
        try:
            self.emit(decision)
        except Exception:  # noqa: BLE001 - e.g. disk full: try the broker directly, then give up
            log.critical("cannot record the ERROR decision in the outbox", exc_info=True)
            publish_directly(self.transport, self.topics.decision, decision.payload(), "the ERROR decision")

    # -- housekeeping ----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        lat = list(self.stats.latencies_ms)
        return {"device_id": self.settings.mqtt.device_id, "uptime_s": round(time.monotonic() - self.stats.started, 1),
                "fps": round(self.stats.fps(), 2), "frames": self.stats.frames, "decisions": self.stats.decisions,
                "errors": self.stats.errors,
                "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
                **self._outbox_health(),
                "outbox_error": self.pump.error,
                "collection_faces": len(self.index), "collection_ok": self.index.usable,
                "collection_version": self.index.position, "collection_error": self.index.error,
                "collection_scan": {**self.index.scan_info(), "blas_threads": self.blas_threads},
                "camera_connected": self.camera.connected.is_set(),
                "camera_reopens": self.camera.reopens, "camera_stalls": self.camera.stalls,
                "camera_hung_readers": self.camera.hung_readers(),
                "frames_dropped": self.camera.dropped,
                "mqtt_connected": self.transport.is_connected(), "clock_synchronized": wall_clock.synchronized(),
                "stranger_risk": self._stranger_risk(),
                "relay_stuck": self.relay.stuck,
                "rss_mib": round(rss, 1) if (rss := rss_mib()) is not None else None,
                "heap_released_mib": self.heap_released_mib,
                **self.panel.health(),
                **(self.badges.health() if self.badges.sources else {}),
                "liveness": self.pipeline.components.liveness.counters() if self.pipeline.components.liveness else None,
                **({"sync": self.sync.health()} if self.sync else {})}

    def _stranger_risk(self) -> dict[str, Any]:
        """The risk for the faces the door compares with now: computed again (and logged, WARNING
        above matching.max_stranger_rate) when the index has grown or shrunk since it was last
        stated — the desk's enrollments reach the index without a reload."""
        if self.stranger_risk.get("Comparisons") != len(self.index):
            self.stranger_risk = log_stranger_risk(self.engine.calibration, self.settings.matching,
                                                   len(self.index))
        return self.stranger_risk

    def _outbox_health(self) -> dict[str, Any]:
        """The outbox's depth and drops, or None for both where it cannot be read (health must
        still go out and say ``outbox_error``)."""
        try:
            return {"outbox_depth": len(self.outbox), "outbox_dropped": self.outbox.dropped()}
        except Exception:  # noqa: BLE001 - e.g. disk I/O error: the pump retries and says why
            return {"outbox_depth": None, "outbox_dropped": None}

    def publish_health(self) -> bool:
        return self.transport.publish(self.topics.health, json.dumps(self.health()), qos=0, timeout=0.5)

    def _housekeeping(self, now: float) -> None:
        notify("WATCHDOG=1")
        stalled = self.camera.watch(now)
        if stalled is not None:  # its read hangs: the loop (and the watchdog) go on, the door says so
            self.fail_closed(CameraError(stalled), now)  # no source in it: an RTSP URL may carry a password
        self._faults(now)
        if self.sync is not None and self.sync.changed():
            self.index.refresh(0)  # a change set was applied: revocations take effect now
        else:
            self.index.refresh(self.settings.matching.reload_interval_s)
        if self.pipeline.stale is not None:
            self.pipeline.stale.release_when_fresh(self.pipeline.components)  # held denials decided again
        if now >= self._next_health:
            sent = self.publish_health()
            self._next_health = now + (self.settings.mqtt.health_interval_s if sent else 1.0)
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload()
        self._badges(self.clock.now())

    def _faults(self, now: float) -> None:
        """A lock output that may be held released (``relay_stuck``), an access-panel output
        that carries nothing to the panel (``osdp_fault``: the reader did not start again with
        the panel's key, or refused the key it was sent; ``wiegand_stuck``), or a camera not
        opened again (its hung readers at their bound, or no reader thread could start): ERROR
        (and one log record) every ERROR_REPEAT_S until it clears, timed here (its text may change
        between attempts, which fail_closed's own limit would count as another error); one clock
        for both limits: never 60 s apart. A fault that cleared and came back is said at once
        (at most every FAULT_AGAIN_S: a flapping output is not a flood); before, a lock stuck
        open again within 30 s of the last one's ERROR waited out those 30 s, and fail_closed's
        own limit held back a new fault whose text was the last one's (found in the tenth session)."""
        for output, fault in (("relay", RelayError(stuck) if (stuck := self.relay.stuck) is not None else None),
                              ("panel", PanelError(why) if (why := self.panel.fault) is not None else None),
                              ("camera", CameraError(cam) if (cam := self.camera.fault) is not None else None)):
            last, cleared = self._fault_said.get(output, (float("-inf"), True))
            if fault is None:
                if not cleared:
                    self._fault_said[output] = (last, True)
                continue
            if now - last >= (FAULT_AGAIN_S if cleared else ERROR_REPEAT_S):
                self._fault_said[output] = (now, False)
                self.fail_closed(fault, now, limited=False)

    def _badges(self, now: float) -> None:
        """Badge reads (card modes) and closing verification windows; nothing while the
        collection is unusable (fail closed: the reads are dropped and logged)."""
        reads = self.badges.drain()
        if not self.index.usable:
            for read in reads:
                log.error("badge %s dropped: the collection is unusable", read.credential)
            return
        errors: list[Exception] = []
        for read in reads:  # one read that fails loses none of the others
            errors += self._publish(lambda read=read: self.pipeline.badge(read, now), now=now)
        errors += self._publish(lambda: self.pipeline.tick(now), now=now)
        for exc in errors:
            self.fail_closed(exc)

    def _replay_ended(self) -> None:
        """A replay ended: a card_and_face verification still open gets its DENIED_NO_FACE now
        (no more frames can bring the face), not silence."""
        self._close_verifications("the replay ended")

    def _close_verifications(self, reason: str) -> None:
        """Every card_and_face verification still open closes now, DENIED_NO_FACE saying ``reason``
        (no more frames will bring its face); one the outbox refused is an ERROR (fail_closed)."""
        if not self.index.usable:
            return
        errors = self._publish(lambda: self.pipeline.tick(float("inf"), reason=reason))
        for exc in errors:
            self.fail_closed(exc)

    def reload(self) -> None:
        """SIGHUP: rebuild everything derived from [matching] and [liveness], all of it or none
        (camera/MQTT/model changes and the collection id need a restart)."""
        from facelink.config import load_settings

        try:
            fresh = load_settings(self.config_path)
            ignored = not_reloaded(self.settings, fresh)
            fresh.matching.collection_id = self.settings.matching.collection_id
            restart_only = [k for k in RESTART_ONLY_MATCHING
                            if getattr(fresh.matching, k) != getattr(self.settings.matching, k)]
            if restart_only:  # the card modes' factors and badge readers are built once: never half-apply
                raise ValueError(f"matching.{restart_only[0]} changed: restart the daemon to apply it")
            check_panel_debounce(self.settings.door, self.settings.osdp, fresh.matching)  # the running reader's
            if ignored:  # never "unchanged" when the file says otherwise (a removed desk key, a new collection)
                log.warning("reload: not applied until the daemon restarts, the running values stay: %s",
                            ", ".join(ignored))
            if fresh.matching == self.settings.matching and fresh.liveness == self.settings.liveness:
                log.info("[matching] and [liveness] are as they were: nothing reloaded%s",
                         "" if ignored else " (configuration unchanged)")
                return  # the people at the door keep what their tracks have seen
            check_door_threshold(self.engine.calibration, fresh.matching.similarity_threshold)
            risk = log_stranger_risk(self.engine.calibration, fresh.matching, len(self.index))
            # the running settings with only what a reload applies: nothing else of the file's
            # (mqtt.device_id, models.*) may reach the rebuilt components
            applied = self.settings.model_copy(update={section: getattr(fresh, section) for section in RELOADED})
            components = build_components(applied, self.engine, previous=self.pipeline.components)  # last: it
            # takes over the running tracks (undecided ones start again), so nothing may refuse after it
        except Exception as exc:  # noqa: BLE001 - a bad file keeps the running config, whole
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        changes = reloaded(self.settings, fresh)
        self.pipeline.components = components
        self.settings.matching, self.settings.liveness = fresh.matching, fresh.liveness
        self.stranger_risk = risk
        log.warning("configuration reloaded: threshold %.2f, %d of %d frames (%s)",
                    fresh.matching.similarity_threshold, fresh.matching.frames_required,
                    fresh.matching.frames_window, ", ".join(changes))

    def _frame(self, frame: Frame) -> None:
        """One frame: every decision it made is published, also when it failed part-way (a card
        window it closed, a face decided before the one that failed; never a GRANTED then, see
        ``DecidedThenFailed``); then its error is raised."""
        now = self.clock.frame(frame)
        errors = self._publish(lambda: self.pipeline.process(frame, now), frame.captured_at, now)
        for exc in errors[1:]:
            self.fail_closed(exc)
        if errors:
            raise errors[0]
        self.stats.frame_done(frame.captured_at, time.monotonic())

    def _publish(self, step: Callable[[], list[Decision]], captured_at: float | None = None,
                 now: float | None = None) -> list[Exception]:
        """Run one pipeline step (decided at ``now``) and publish the decisions it made, also
        those of a step that failed part-way (:class:`DecidedThenFailed`); return the errors (the
        step's first) for the caller to report. Nothing raised here is lost."""
        made_on = self.pipeline.stale.mark() if self.pipeline.stale is not None else None
        try:
            made, errors = step(), []
        except DecidedThenFailed as failed:
            made, errors = failed.decisions, [failed.cause]
        except Exception as exc:  # noqa: BLE001 - returned: the caller reports it (fail closed)
            return [exc]
        return errors + self._emit_each(made, captured_at, now, made_on)

    def _emit_each(self, decisions: list[Decision], captured_at: float | None = None,
                   now: float | None = None, made_on: int | None = None) -> list[Exception]:
        """Each decision gets its own try at the outbox, so one that fails loses none of the
        others; what failed is returned for the caller to report."""
        errors: list[Exception] = []
        for decision in decisions:
            try:
                self.emit(decision, now, made_on)
            except Exception as exc:  # noqa: BLE001 - reported by the caller (fail closed)
                errors.append(exc)
                self.pipeline.not_carried_out(decision)  # a GRANTED not recorded opened nothing
                continue
            if captured_at is not None:
                self.stats.decision_latencies_ms.append((time.monotonic() - captured_at) * 1000.0)
        return errors

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> int:
        self.heap_released_mib = release_free_heap()  # what loading the models and the gallery freed
        self.pump.start()
        if self.sync is not None:
            self.sync.start(self.transport)
        self.camera.start()
        notify("READY=1")
        log.info("door %s running: collection %s, threshold %.2f, %d of %d frames",
                 self.settings.mqtt.device_id, self.settings.matching.collection_id,
                 self.settings.matching.similarity_threshold, self.settings.matching.frames_required,
                 self.settings.matching.frames_window)
        backoff = 0.0
        while not self.stop_requested.is_set():
            now = time.monotonic()
            try:
                self._housekeeping(now)
            except Exception as exc:  # noqa: BLE001 - fail closed, keep running
                self.fail_closed(exc)
            frame = self.camera.get(timeout=0.2)
            if frame is None:
                if not self.camera.end_of_stream.is_set():
                    continue
                frame = self.camera.get(timeout=0)  # the last frames may have come just before the flag
                if frame is None:
                    log.info("video source ended")
                    self._replay_ended()
                    break
            if not self.index.usable:  # fail closed: nothing is decided until a full reload succeeds
                continue
            try:
                self._frame(frame)
                backoff = 0.0
            except Exception as exc:  # noqa: BLE001 - fail closed, never crash-loop
                self.fail_closed(exc)
                backoff = min(max(backoff * 2, 0.1), 5.0)
                self.stop_requested.wait(backoff)
        return self.shutdown()

    def _publish_kept(self) -> None:
        """The door stops: the decisions the stale gate still keeps to be made again are published
        as ERROR (:meth:`StaleGate.at_shutdown`), so that each person decided is on record; what
        the outbox refused is raised (after the others went in)."""
        if self.pipeline.stale is None:
            return
        errors = self._publish(lambda: self.pipeline.stale.at_shutdown(self.pipeline.components))
        for exc in errors[1:]:
            log.error("shutdown: a decision kept to be made again was not recorded: %s", describe_error(exc))
        if errors:
            raise errors[0]

    def shutdown(self, flush_timeout_s: float = 10.0) -> int:
        """Stop in order: inputs, then the decisions the stale gate kept and the card_and_face
        verifications still open (published before the outbox drains: each person decided is on
        record), then the panel (it waits for the answers
        to open card reads), then the relay (it waits for a running door command; a pulse ends
        locked), then the outbox's drain and the rest. Every step runs whatever an earlier one
        raised (found in review: a camera or panel that failed to close skipped the relay's and the
        outbox's); 1 if any step failed."""
        notify("STOPPING=1")
        failed: list[str] = []

        def step(what: str, fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except Exception:  # noqa: BLE001 - the next steps still run (the relay's above all)
                log.exception("shutdown: %s failed", what)
                failed.append(what)
                return None

        step("camera", self.camera.stop)
        step("badge readers", self.badges.close)
        step("decisions kept to be made again", self._publish_kept)  # before the outbox drains and closes
        # a badge's verification still open: DENIED_NO_FACE now, not lost (found in review, tenth session)
        step("open card verifications", lambda: self._close_verifications("the door stopped"))
        step("access panel", self.panel.close)
        step("door relay", self.relay.close)
        left = step("outbox drain", lambda: self.pump.close(flush_timeout_s))  # the pump is the one drainer
        step("health", self.publish_health)  # the last word on frames, decisions and outbox depth
        if left:
            log.warning("%s decisions stay in the outbox and will be sent on the next start",
                        left if left > 0 else "Some")
        step("MQTT client", self.transport.stop)
        if self.sync is not None:
            step("sync", self.sync.close)
        step("outbox", self.outbox.close)
        step("store", self.store.close)
        log.info("stopped: %d frames, %d decisions%s", self.stats.frames, self.stats.decisions,
                 f" ({', '.join(failed)} failed)" if failed else "")
        return 1 if failed else 0
