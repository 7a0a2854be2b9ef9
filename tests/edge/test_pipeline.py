"""Pipeline mechanics with small fakes: hot swap never mixes pairs, drops are counted, gate, drain."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.egress import EgressGuard
from edge.keystage import KeyStage
from edge.metrics import Metrics
from edge.pipeline import ModelContext, Pipeline
from edge.sinks import DiscardSink
from hardware.camera import ReplayCamera
from hardware.errors import KeyStageError
from tests.kits.edge import policy, wait_until

FRAMES = np.random.default_rng(0).random((32, 28, 28)).astype(np.float32)


class TagStage(KeyStage):
    """Keys a frame by filling it with this generation's tag (so the model can tell who keyed it)."""

    def __init__(self, tag: int, fail: bool = False):
        self.tag, self.fail = tag, fail

    def check(self):
        raise AssertionError("not used here")

    def __call__(self, image):
        if self.fail:
            raise KeyStageError("broken")
        time.sleep(0.0002)
        return np.full(image.shape, self.tag % 256, dtype=np.uint8)


class TagModel:
    """Counts frames whose key tag is not its own: a mismatched model/key pair."""

    def __init__(self, tag: int, delay: float = 0.0):
        self.tag, self.delay, self.mismatched, self.calls = tag, delay, 0, 0

    def invoke(self, frame):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if not np.all(frame == self.tag % 256):
            self.mismatched += 1
        out = np.zeros(10, dtype=np.float32)
        out[self.tag % 10] = 1.0
        return out


def _ctx(tag: int, delay: float = 0.0, fail: bool = False) -> ModelContext:
    return ModelContext(tag, TagModel(tag, delay), TagStage(tag, fail), EgressGuard(policy()))


def _pipeline(ctx, max_frames=None, fps=None, drop=False, sink=None, **kw) -> Pipeline:
    cam = ReplayCamera(FRAMES, fps=fps).open()
    return Pipeline(cam, ctx, [sink or DiscardSink()], Metrics(), queue_size=4, drop_when_full=drop,
                    max_frames=max_frames, **kw)


@pytest.mark.timeout(60)
def test_hot_swap_under_load_never_pairs_a_frame_with_another_model():
    contexts = [_ctx(1)]
    pipe = _pipeline(contexts[0], max_frames=3000)
    pipe.open_gate()
    pipe.start()
    while not pipe.finished.is_set() and len(contexts) < 400:
        contexts.append(_ctx(len(contexts) + 1))
        pipe.swap(contexts[-1])
        time.sleep(0.001)
    assert wait_until(pipe.finished.is_set, 30) and pipe.stop()
    used = [c for c in contexts if c.model.calls]
    assert len(used) > 20, "the test must swap while frames are in flight"
    assert sum(c.model.mismatched for c in contexts) == 0
    assert pipe.metrics.frames == 3000 == sum(c.model.calls for c in contexts)


def test_drops_at_capture_are_counted_never_silent():
    pipe = _pipeline(_ctx(1, delay=0.004), max_frames=100, fps=2000, drop=True)
    pipe.open_gate()
    pipe.start()
    assert wait_until(pipe.finished.is_set, 30) and pipe.stop()
    m = pipe.metrics
    assert m.frames == 100 == pipe.accepted
    assert m.dropped.get("capture_queue_full", 0) > 0
    assert pipe.captured == pipe.accepted + m.dropped["capture_queue_full"]
    assert m.dropped.get("sensor", 0) == pipe.camera.dropped    # frames the sensor skipped, if any


def test_closed_gate_lets_no_frame_reach_the_model():
    ctx = _ctx(1)
    pipe = _pipeline(ctx)
    pipe.start()                       # gate never opened: the key stage was never found healthy
    time.sleep(0.3)
    assert pipe.stop()
    assert ctx.model.calls == 0 and pipe.metrics.frames == 0
    assert pipe.metrics.dropped["fail_closed"] == pipe.captured > 0


def test_key_stage_error_closes_the_gate_and_reports():
    errors = []
    pipe = _pipeline(_ctx(1, fail=True), on_key_error=errors.append)
    pipe.on_key_error = lambda exc: (errors.append(exc), pipe.close_gate())
    pipe.open_gate()
    pipe.start()
    assert wait_until(lambda: errors, 5)
    assert pipe.stop()
    assert not pipe.gate_open and pipe.context.model.calls == 0
    assert isinstance(errors[0], KeyStageError) and pipe.metrics.dropped["key_stage_error"] >= 1


def test_stop_drains_every_accepted_frame():
    pipe = _pipeline(_ctx(1, delay=0.002))
    pipe.open_gate()
    pipe.start()
    assert wait_until(lambda: pipe.metrics.frames > 20, 10)
    assert pipe.stop(timeout=10)
    assert pipe.metrics.frames == pipe.accepted and pipe.finished.is_set()


def test_refused_records_are_counted_and_do_not_reach_sinks():
    sink = DiscardSink()
    ctx = _ctx(1)
    ctx.guard = EgressGuard(policy(top_k=1, max_record_bytes=64))   # too small for any record
    pipe = _pipeline(ctx, max_frames=10, sink=sink)
    pipe.open_gate()
    pipe.start()
    assert wait_until(pipe.finished.is_set, 10) and pipe.stop()
    assert sink.sent == 0 and ctx.guard.refused == 10 and pipe.metrics.dropped["egress_refused"] == 10


def test_camera_errors_go_to_the_callback():
    calls = threading.Event()
    cam = ReplayCamera(FRAMES).open()
    cam.close()                        # reads now raise CameraError
    pipe = Pipeline(cam, _ctx(1), [DiscardSink()], Metrics(),
                    on_camera_error=lambda exc: (calls.set(), time.sleep(0.05)))
    pipe.open_gate()
    pipe.start()
    assert calls.wait(5)
    assert pipe.stop()
