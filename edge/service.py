"""The device service: builds the pipeline from a DeviceConfig and supervises it.

The supervisor (the calling thread) owns everything slow or stateful: key-stage health checks and the
fail-closed retry back-off, camera recovery, model hot-swap, periodic stats records, and signals
(SIGTERM/SIGINT: drain, flush sinks, return; SIGHUP: look for a new model/key pair now).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from base.errors import ConfigError, KeycamError, ModelError
from edge.config import DeviceConfig
from edge.egress import STAGES, EgressGuard, OutputPolicy
from edge.keystage import KEY_STAGES, Health, KeyStage, KeyStageContext, SimulatedKeyStageConfig
from edge.labels import labels_for
from edge.metrics import Metrics, MetricsServer
from edge.pipeline import ModelContext, Pipeline, PreprocessStage
from edge.preflight import check_pairing
from edge.runtime import TFLiteModel
from edge.sinks import Sink, make_sink
from hardware.camera import Camera, make_camera
from keys.device_files import DeviceFiles
from keys.sealing import ROLE_MODEL, ROLE_PREPROCESS, ROLE_SENSOR_KEY

log = logging.getLogger("keycam.service")
_TICK_S = 0.05
_REQUIRED_METADATA = ("model_id", "key_fingerprint", "sensor_fingerprint", "labels")


def file_signature(paths: list[Path]) -> tuple:
    """What identifies the current version of the model/key files (follows symlinks, e.g. A/B slots)."""
    sig = []
    for p in paths:
        try:
            st = os.stat(p)
            sig.append((os.path.realpath(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            sig.append((str(p), None))
    return tuple(sig)


def output_policy(model: TFLiteModel, path: Path, top_k: int, max_record_bytes: int) -> OutputPolicy:
    """The egress policy of a keyed model, from its embedded keycam metadata."""
    meta = model.metadata
    missing = [k for k in _REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelError(f"model {path} lacks keycam metadata {missing}: is it a keyed model made by "
                         "provisioning (tools.keying / keycam keys)?")
    n_outputs = int(model.interpreter.get_output_details()[0]["shape"][1:].prod())
    labels = tuple(str(x) for x in meta.get("labels") or ())
    if not labels and meta.get("dataset") in ("mnist", "fashion"):
        labels = labels_for(meta["dataset"])
    if not labels:      # no label names embedded: records carry class indices
        labels = tuple(str(i) for i in range(n_outputs))
    return OutputPolicy(model_id=str(meta["model_id"]), key_fingerprint=str(meta["key_fingerprint"]),
                        sensor_fingerprint=str(meta["sensor_fingerprint"]), labels=labels,
                        n_outputs=n_outputs, output_encrypted=bool(meta.get("output_encrypted")),
                        top_k=min(top_k, max(len(labels), 1)), max_record_bytes=max_record_bytes,
                        outputs_are_probabilities=_ends_in_softmax(meta))


def _ends_in_softmax(meta: dict) -> bool | None:
    """Whether the model's last op is SOFTMAX, from the op list provisioning embeds (None: unknown)."""
    ops = meta.get("ops")
    if not isinstance(ops, list) or not ops or not isinstance(ops[-1], dict):
        return None
    return str(ops[-1].get("op", "")).upper().startswith("SOFTMAX")


@dataclass
class _Backoff:
    """Fail-closed retry state: attempt count and the next retry time."""

    initial: float
    maximum: float
    attempt: int = 0
    delay: float = 0.0
    next_at: float = 0.0

    def failed(self, now: float) -> float:
        self.delay = self.initial if self.attempt == 0 else min(self.delay * 2, self.maximum)
        self.attempt += 1
        self.next_at = now + self.delay
        return self.delay

    def reset(self) -> None:
        self.attempt, self.delay, self.next_at = 0, 0.0, 0.0


class Service:
    """One running device: camera, key stage, keyed model, egress guard, sinks, metrics."""

    def __init__(self, config: DeviceConfig, max_frames: int | None = None, latency_window: int = 4096,
                 announce: Callable[[str], None] | None = None):
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"--frames must be >= 1, got {max_frames}")
        self.cfg, self.max_frames = config, max_frames
        self._announce = announce        # start-up lines for the operator (the metrics URL)
        self.files = DeviceFiles(config.device_id, config.identity)
        if not self.files.sealed:
            log.warning("%s names no identity: model and key files are read in clear (demo/research only; "
                        "a keyed model is key material)", config.source)
        self.metrics = Metrics(latency_window)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._key_failed = threading.Event()
        self._seq = {"alarm": 0, "stats": 0}
        self._seq_lock = threading.Lock()
        self._key_error = ""
        self._pending_sig: tuple | None = None     # hot-swap candidate seen once (debounce)
        self._rejected_sig: tuple | None = None    # a pair already refused: do not retry or re-alarm
        self._key_backoff = _Backoff(config.key_stage.retry_initial_s, config.key_stage.retry_max_s)
        self._shared_stage: KeyStage | None = None
        self._generation = 0
        self._camera_backoff = _Backoff(config.key_stage.retry_initial_s, config.key_stage.retry_max_s)
        self.sinks: list[Sink] = []
        self.camera = None
        self.metrics_server: MetricsServer | None = None
        self.pipeline: Pipeline | None = None

    # -- building -----------------------------------------------------------------------------------
    def _watched_files(self) -> list[Path]:
        ks, pre = self.cfg.key_stage, self.cfg.preprocess
        return ([Path(self.cfg.model.path)] + ([Path(ks.sensor_key)] if isinstance(ks, SimulatedKeyStageConfig) else [])
                + ([Path(pre.path)] if pre is not None else []))

    def _key_stage(self, policy: OutputPolicy) -> KeyStage:
        if self._shared_stage is not None:     # one actuator, shared by every model generation
            return self._shared_stage
        stage = KEY_STAGES.build(self.cfg.key_stage, KeyStageContext(
            policy.sensor_fingerprint, read=lambda path: self.files.read(path, ROLE_SENSOR_KEY)))
        if not stage.per_model:
            self._shared_stage = stage
        return stage

    def _load_model(self, path: str, role: str, num_threads: int) -> TFLiteModel:
        """A model file opened into memory (sealed files are decrypted there, never to disk)."""
        try:
            blob = self.files.read(path, role)
        except FileNotFoundError as exc:
            raise ModelError(f"model file not found: {path}") from exc
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc}") from exc
        return TFLiteModel(blob, num_threads=num_threads)

    def load_context(self) -> ModelContext:
        """Load the configured model and build its key stage and guard (not yet health-checked)."""
        files = file_signature(self._watched_files())
        mc = self.cfg.model
        model = self._load_model(mc.path, ROLE_MODEL, mc.num_threads)
        try:
            policy = output_policy(model, Path(mc.path), mc.top_k, self.cfg.pipeline.max_record_bytes)
        except KeycamError as exc:
            raise ModelError(f"model {mc.path}: {exc}") from exc
        pre = None
        if self.cfg.preprocess is not None:      # the key stage then keys frames for the preprocess stage
            pc = self.cfg.preprocess
            pre = PreprocessStage(self._load_model(pc.path, ROLE_PREPROCESS, pc.num_threads), pc.path)
            pre.check_feeds(model, policy.sensor_fingerprint)
            policy = replace(policy, sensor_fingerprint=pre.input_fingerprint)
        self._generation += 1
        return ModelContext(self._generation, model, self._key_stage(policy), EgressGuard(policy), files, pre)

    def _make_camera(self) -> Camera:
        try:
            return make_camera(self.cfg.camera)
        except ConfigError as exc:
            raise ConfigError(f"{self.cfg.source}: camera: {exc}") from exc

    # -- records ------------------------------------------------------------------------------------
    def _next_seq(self, kind: str) -> int:
        with self._seq_lock:
            self._seq[kind] += 1
            return self._seq[kind]

    def alarm(self, reason: str, attempt: int = 0, retry_in_s: float = 0.0, detail: str = "") -> None:
        """Send an alarm record (the detail stays in the local log: free text never leaves)."""
        log.warning("alarm %s (attempt %d, retry in %.1fs): %s", reason, attempt, retry_in_s, detail)
        self.metrics.alarm()
        ctx = self.pipeline.context
        self.pipeline.send({"type": "alarm", "timestamp": time.time(), "seq": self._next_seq("alarm"),
                            "model_id": ctx.policy.model_id, "reason": reason, "attempt": int(attempt),
                            "retry_in_s": float(retry_in_s)}, ctx.guard)

    def stats_record(self) -> dict:
        snap, p = self.metrics.snapshot(), self.pipeline.context.policy
        return {"type": "stats", "timestamp": time.time(), "seq": self._next_seq("stats"),
                "model_id": p.model_id, "key_fingerprint": p.key_fingerprint,
                "sensor_fingerprint": p.sensor_fingerprint, "frames": snap["frames"],
                "dropped": snap["dropped"], "fps": float(snap["fps"]), "alarms": snap["alarms"],
                "refused": snap["refused"], "sink_lost": snap["sink_lost"],
                "latency_ms": {s: {q: float(v) for q, v in snap["latency_ms"][s].items()} for s in STAGES}}

    # -- supervision --------------------------------------------------------------------------------
    def _set_info(self, ctx: ModelContext) -> None:
        p = ctx.policy
        self.metrics.info = {"model_id": p.model_id, "key_fingerprint": p.key_fingerprint,
                             "sensor_fingerprint": p.sensor_fingerprint}

    def _apply_health(self, health: Health, backoff: _Backoff, now: float) -> None:
        """Open or close the gate; the back-off only resets (and key_stage_recovered is sent) once the
        stage stayed healthy a whole health interval, so a stage that fails again right after reopening
        keeps backing off without alternating error/recovered alarms."""
        pipe = self.pipeline
        if health.ok:
            if pipe.gate_open:
                if backoff.attempt:      # announced only once it held: a flapping stage sends no recoveries
                    self.alarm("key_stage_recovered", backoff.attempt, 0.0, "key stage healthy again")
                backoff.reset()
            else:
                pipe.open_gate()
            return
        pipe.close_gate()
        delay = backoff.failed(now)
        self.alarm(health.reason, backoff.attempt, delay, health.detail)

    def _on_key_error(self, exc: BaseException) -> None:
        """Called from the key thread: close the gate at once; the supervisor alarms and retries."""
        self.pipeline.close_gate()
        self._key_error = f"{type(exc).__name__}: {exc}"
        self._key_failed.set()

    def _on_camera_error(self, exc: BaseException) -> None:
        """Called from the capture thread: alarm, back off, reopen the camera."""
        delay = self._camera_backoff.failed(time.monotonic())
        self.alarm("camera_error", self._camera_backoff.attempt, delay, str(exc))
        if self._stop.wait(delay):
            return
        try:
            self.camera.close()
            self.camera.open()
            self._camera_backoff.reset()
        except KeycamError as reopen_exc:
            log.error("camera reopen failed: %s", reopen_exc)

    def _try_swap(self, force: bool) -> None:
        """Load a new model/key pair if its files changed (and stayed unchanged for one poll)."""
        current = self.pipeline.context
        sig = file_signature(self._watched_files())
        if sig == current.files or sig == self._rejected_sig:
            self._pending_sig = None
            return
        if not force and sig != self._pending_sig:
            self._pending_sig = sig          # debounce: a deploy may still be writing
            return
        self._pending_sig = None
        try:
            new = self.load_context()
            health = check_pairing(new, self.camera.frame_shape)     # the same checks as at start-up
        except KeycamError as exc:
            health = Health(False, "model_swap_rejected", str(exc))
        else:
            if new.policy == current.policy and new.preprocess_id == current.preprocess_id:
                # same pair rewritten (e.g. a key file restored)
                current.files = sig
                return
        if not health.ok:
            self._rejected_sig = sig
            self.alarm("model_swap_rejected", 0, 0.0, f"keeping {current.policy.model_id}: {health.detail}")
            return
        self.pipeline.swap(new)
        self.metrics.model_swaps += 1
        self._set_info(new)
        self.alarm("model_swapped", 0, 0.0, f"{current.policy.model_id} -> {new.policy.model_id}")
        if not self.pipeline.gate_open:
            self._key_backoff.reset()
            self.pipeline.open_gate()

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def request_reload(self, *_args) -> None:
        self._reload.set()

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
                    signal.SIGHUP: self.request_reload}
        return {sig: signal.signal(sig, h) for sig, h in handlers.items()}

    def run(self) -> dict:
        """Run until --frames are done, the source ends, or SIGTERM/SIGINT; return the summary."""
        previous = self._install_signals()
        started = time.monotonic()
        stop_reason = "signal"
        try:
            self._build()
            self.camera.open()
            health = check_pairing(self.pipeline.context, self.camera.frame_shape)   # can it ever work?
            self._apply_health(health, self._key_backoff, time.monotonic())
            self.pipeline.start()
            stop_reason = self._supervise()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.summary(time.monotonic() - started, stop_reason)

    def _build(self) -> None:
        cfg = self.cfg
        ctx = self.load_context()
        self._set_info(ctx)
        self.camera = self._make_camera()
        for sink_cfg in cfg.sinks:
            self.sinks.append(make_sink(sink_cfg))
        self.metrics.sink_stats = lambda: {f"{s.name}{i}" if i else s.name: s.stats()
                                           for i, s in enumerate(self.sinks)}
        if cfg.metrics.enabled:
            self.metrics_server = MetricsServer(self.metrics, cfg.metrics.port)
            url = f"http://127.0.0.1:{self.metrics_server.port}/metrics"
            log.info("metrics on %s", url)
            if self._announce is not None:
                self._announce(f"metrics: {url}")
        pc = cfg.pipeline
        self.pipeline = Pipeline(self.camera, ctx, self.sinks, self.metrics, pc.queue_size, pc.drop_when_full,
                                 pc.camera_timeout_s, self.max_frames, self._on_key_error, self._on_camera_error)

    def _supervise(self) -> str:
        cfg, pipe = self.cfg, self.pipeline
        now = time.monotonic()
        next_health = now + cfg.key_stage.health_interval_s
        next_watch = now + cfg.model.watch_interval_s
        next_stats = now + cfg.pipeline.stats_interval_s
        while True:
            if self._stop.wait(_TICK_S):
                return "signal"
            if pipe.finished.is_set():
                return "source ended" if pipe.source_ended.is_set() else "frames done"
            now = time.monotonic()
            if self._key_failed.is_set():
                self._key_failed.clear()
                self._apply_health(Health(False, "key_stage_error", self._key_error), self._key_backoff, now)
            elif (pipe.gate_open and now >= next_health) or \
                    (not pipe.gate_open and now >= self._key_backoff.next_at):
                self._apply_health(pipe.context.key_stage.check(), self._key_backoff, now)
                next_health = now + cfg.key_stage.health_interval_s
            if self._reload.is_set() or (cfg.model.watch_interval_s and now >= next_watch):
                self._try_swap(force=self._reload.is_set())
                self._reload.clear()
                next_watch = now + cfg.model.watch_interval_s
            if cfg.pipeline.stats_interval_s and now >= next_stats:
                if pipe.gate_open:       # while failing closed only alarms leave
                    pipe.send(self.stats_record())
                next_stats = now + cfg.pipeline.stats_interval_s

    def _shutdown(self) -> None:
        self._stop.set()                 # also interrupts a camera back-off wait
        if self.pipeline is not None:
            if not self.pipeline.stop(timeout=10.0):
                log.error("pipeline did not drain within 10 s")
            if self.cfg.pipeline.stats_interval_s and self.pipeline.gate_open:
                self.pipeline.send(self.stats_record())      # the last word before the sinks close
        for sink in self.sinks:
            try:
                sink.close()
            except KeycamError as exc:
                log.error("closing %s sink: %s", sink.name, exc)
            sink.report_loss()
        if self.camera is not None:
            self.camera.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.pipeline is not None:
            self.pipeline.context.key_stage.close()

    def summary(self, elapsed: float, stop_reason: str) -> dict:
        snap = self.metrics.snapshot()
        frames = snap["frames"]
        return {"frames": frames, "elapsed_s": round(elapsed, 3),
                "fps": round(frames / elapsed, 2) if elapsed > 0 else 0.0,
                "accepted": self.pipeline.accepted if self.pipeline else 0,
                "dropped": snap["dropped"], "dropped_by_reason": snap["dropped_by_reason"],
                "latency_ms": snap["latency_ms"], "alarms": snap["alarms"], "refused": snap["refused"],
                "model_swaps": snap["model_swaps"], "sinks": snap["sinks"], "sink_lost": snap["sink_lost"],
                "stop_reason": stop_reason,
                "model_id": snap["model_id"], "key_fingerprint": snap["key_fingerprint"],
                "sensor_fingerprint": snap["sensor_fingerprint"]}
