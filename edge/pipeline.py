"""The frame pipeline: capture -> key/ADC -> inference -> egress, one thread per stage.

Inference optionally runs a keyed preprocessing model (e.g. the SAN stage) on each keyed frame first.

Stages are joined by bounded queues. When inference is slower than the camera, capture drops the new
frame and counts it (`capture_queue_full`); frames the sensor skipped are counted too (`sensor`).
Every keyed frame carries the `ModelContext` (model + key stage + egress guard) that keyed it, so a
hot swap never lets a frame keyed for one model reach another. While the key stage is unhealthy the
gate is closed: capture, key and egress drop frames (`fail_closed`) and nothing but alarm records
leave (the service sends those). Stopping drains: capture ends, a sentinel flows through every
stage, and each stage finishes what it holds first.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from base.errors import ModelError
from edge.egress import EgressGuard, EgressRefused, OutputPolicy, prediction_record
from edge.keystage import KeyStage
from edge.metrics import Metrics
from edge.runtime import TFLiteModel
from edge.sinks.base import Sink, SinkError
from hardware.errors import KeyStageClosed
from hardware.preadc import quantise

log = logging.getLogger("keycam.pipeline")
_END = object()   # sentinel that drains the stages in order
_POLL_S = 0.1     # how often blocked stages look at the stop flag


class PreprocessStage:
    """An optional keyed TFLite model run on every keyed frame before the model, e.g. the SAN stage of
    `keycam san export --tflite F --key K`: it takes frames keyed by the device's sensor key and emits frames
    (uint8 codes) keyed for the model; its metadata names both keys' fingerprints (equal for the SAN stage)."""

    def __init__(self, model: TFLiteModel, path: str):
        meta, self.model, self.path = model.metadata, model, path
        missing = [k for k in ("input_key_fingerprint", "output_key_fingerprint") if not meta.get(k)]
        if missing:
            raise ModelError(f"preprocess model {path} lacks metadata {missing}: it must be a keyed stage "
                             "(keycam san export --tflite ... --key K); an unkeyed one would "
                             "run on keyed frames")
        self.input_fingerprint = str(meta["input_key_fingerprint"])
        self.output_fingerprint = str(meta["output_key_fingerprint"])
        self.id = hashlib.sha256(model.model_bytes).hexdigest()[:16]

    def check_feeds(self, model: TFLiteModel, sensor_fingerprint: str) -> None:
        """Refuse a stage whose output size or output key does not match the model it feeds."""
        size = int(np.prod(self.model.interpreter.get_output_details()[0]["shape"]))
        if size != model.input_size:
            raise ModelError(f"preprocess model {self.path} emits {size} values; the model expects {model.input_size}")
        if self.output_fingerprint != sensor_fingerprint:
            raise ModelError(f"preprocess model {self.path} emits frames keyed {self.output_fingerprint[:12]}, the "
                             f"model expects frames keyed {sensor_fingerprint[:12]}: export the stage with the "
                             "model's sensor key (keycam san export --key)")

    def __call__(self, keyed: np.ndarray) -> np.ndarray:
        """One keyed frame in; the stage's output as uint8 codes (its outputs are in [0, 1])."""
        return quantise(self.model.invoke(keyed))


@dataclass
class ModelContext:
    """One matched model/key pair and the egress guard for that model's outputs."""

    generation: int
    model: TFLiteModel
    key_stage: KeyStage
    guard: EgressGuard
    files: tuple = field(default=())      # signature of the files it was loaded from (hot-swap watch)
    preprocess: PreprocessStage | None = None     # optional stage run on each keyed frame before the model

    @property
    def preprocess_id(self) -> str:
        return self.preprocess.id if self.preprocess is not None else ""

    @property
    def policy(self) -> OutputPolicy:
        return self.guard.policy


class Pipeline:
    """Runs the four stage threads over a camera and a set of sinks."""

    def __init__(self, camera, context: ModelContext, sinks: list[Sink], metrics: Metrics,
                 queue_size: int = 4, drop_when_full: bool = True, camera_timeout_s: float = 1.0,
                 max_frames: int | None = None, on_key_error=None, on_camera_error=None):
        self.camera, self.sinks, self.metrics = camera, sinks, metrics
        self._ctx = context
        self.drop_when_full, self.camera_timeout_s = drop_when_full, camera_timeout_s
        self.max_frames = max_frames
        self.on_key_error = on_key_error or (lambda exc: None)
        self.on_camera_error = on_camera_error or (lambda exc: None)
        self._q_frames: queue.Queue = queue.Queue(queue_size)
        self._q_keyed: queue.Queue = queue.Queue(queue_size)
        self._q_out: queue.Queue = queue.Queue(queue_size)
        self._gate = threading.Event()            # open = key stage healthy
        self._stopping = threading.Event()
        self._send_lock = threading.Lock()
        self.captured = 0                         # frames read from the camera
        self.accepted = 0                         # of those, frames that entered the key stage queue
        self.source_ended = threading.Event()
        self.finished = threading.Event()         # the egress stage has drained
        self._threads = [threading.Thread(target=fn, name=f"keycam-{name}", daemon=True) for name, fn in
                         (("capture", self._capture), ("key", self._key), ("infer", self._infer),
                          ("egress", self._egress))]

    # -- control ----------------------------------------------------------------------------------
    @property
    def context(self) -> ModelContext:
        return self._ctx

    def swap(self, context: ModelContext) -> None:
        """Make `context` the pair for every frame keyed from now on (in-flight frames keep theirs)."""
        self._ctx = context

    def open_gate(self) -> None:
        self._gate.set()
        self.metrics.key_stage_healthy = True

    def close_gate(self) -> None:
        self._gate.clear()
        self.metrics.key_stage_healthy = False

    @property
    def gate_open(self) -> bool:
        return self._gate.is_set()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop capturing and drain the stages; True when every stage finished in time."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.ident is not None:          # started
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def send(self, record: dict, guard: EgressGuard | None = None) -> bool:
        """Guard-check one record and hand it to every sink; False when refused."""
        try:
            guarded = (guard or self._ctx.guard).check(record)
        except EgressRefused as exc:
            self.metrics.refuse()
            if self.metrics.refused % 1000 == 1:     # the first, then every 1000th: no log flood
                log.error("egress guard refused a %s record (%d so far): %s", record.get("type")
                          if isinstance(record, dict) else type(record).__name__, self.metrics.refused, exc)
            return False
        with self._send_lock:
            for sink in self.sinks:
                try:
                    sink.send(guarded)
                except SinkError as exc:
                    log.warning("%s", exc)
        return True

    # -- stages -----------------------------------------------------------------------------------
    def _put(self, q: queue.Queue, item: object, downstream: int) -> None:
        """Blocking put; gives up only if the downstream stage thread has died."""
        while True:
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if not self._threads[downstream].is_alive():
                    log.error("pipeline stage %s is gone; dropping", self._threads[downstream].name)
                    return

    def _capture(self) -> None:
        from hardware.errors import CameraEndOfStream, CameraError, CameraTimeout
        m, cam = self.metrics, self.camera
        sensor_dropped = cam.dropped
        try:
            while not self._stopping.is_set():
                if self.max_frames is not None and self.accepted >= self.max_frames:
                    break
                t0 = time.perf_counter()
                try:
                    frame = cam.read(self.camera_timeout_s)
                except CameraTimeout:
                    m.drop("camera_timeout")
                    continue
                except CameraEndOfStream:
                    self.source_ended.set()
                    break
                except CameraError as exc:
                    self.on_camera_error(exc)      # the service alarms, backs off and reopens
                    sensor_dropped = cam.dropped
                    continue
                m.observe("capture", time.perf_counter() - t0)
                self.captured += 1
                if cam.dropped != sensor_dropped:
                    m.drop("sensor", cam.dropped - sensor_dropped)
                    sensor_dropped = cam.dropped
                if not self._gate.is_set():
                    m.drop("fail_closed")
                    continue
                if self.drop_when_full:
                    try:
                        self._q_frames.put_nowait(frame)
                    except queue.Full:
                        m.drop("capture_queue_full")
                        continue
                else:
                    self._put(self._q_frames, frame, 1)
                self.accepted += 1
        finally:
            self._put(self._q_frames, _END, 1)

    def _key(self) -> None:
        m = self.metrics
        try:
            while (frame := self._q_frames.get()) is not _END:
                ctx = self._ctx                        # the pair this frame is bound to from here on
                if not self._gate.is_set():
                    m.drop("fail_closed")
                    continue
                t0 = time.perf_counter()
                try:
                    keyed = ctx.key_stage(frame.image)
                except KeyStageClosed:                 # a failed check the supervisor is closing the gate for
                    m.drop("fail_closed")
                    continue
                except Exception as exc:  # noqa: BLE001 - any key-stage failure must close the gate
                    m.drop("key_stage_error")
                    self.on_key_error(exc)
                    continue
                m.observe("key", time.perf_counter() - t0)
                self._put(self._q_keyed, (frame.seq, keyed, ctx), 2)
        finally:
            self._put(self._q_keyed, _END, 2)

    def _infer(self) -> None:
        m = self.metrics
        try:
            while (item := self._q_keyed.get()) is not _END:
                seq, keyed, ctx = item
                t0 = time.perf_counter()
                try:
                    outputs = ctx.model.invoke(keyed if ctx.preprocess is None else ctx.preprocess(keyed))
                except Exception as exc:  # noqa: BLE001 - a bad frame must not kill the service
                    m.drop("inference_error")
                    log.error("inference failed on frame %d: %s", seq, exc)
                    continue
                m.observe("infer", time.perf_counter() - t0)
                self._put(self._q_out, (seq, outputs, ctx), 3)
        finally:
            self._put(self._q_out, _END, 3)

    def _egress(self) -> None:
        m = self.metrics
        try:
            while (item := self._q_out.get()) is not _END:
                seq, outputs, ctx = item
                if not self._gate.is_set():
                    m.drop("fail_closed")
                    continue
                t0 = time.perf_counter()
                sent = self.send(prediction_record(ctx.policy, seq, time.time(), outputs), ctx.guard)
                m.observe("egress", time.perf_counter() - t0)
                if sent:
                    m.frame_done()
                else:
                    m.drop("egress_refused")
        finally:
            self.finished.set()
