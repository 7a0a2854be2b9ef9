"""Camera in the loop: the real camera with --hil, else a ReplayCamera; keyed through the pre-ADC stage."""
from __future__ import annotations

import time

import numpy as np
import pytest

from hardware.camera import ReplayCamera, ReplayFaults
from hardware.errors import CameraDisconnected, CameraFrameError, CameraTimeout, KeyStageError
from hardware.preadc import PreADCStage, SensorModel, adc
from keys.drbg import Drbg
from keys.generate import KeyConfig, sensor_key

pytestmark = [pytest.mark.camera, pytest.mark.timeout(60)]


def test_frames_are_linear_float_with_increasing_seq_and_timestamps(camera):
    frames = [camera.read(timeout=2.0) for _ in range(10)]
    for frame in frames:
        assert frame.image.dtype == np.float32 and frame.image.shape == camera.frame_shape
        assert 0.0 <= frame.image.min() and frame.image.max() <= 1.0
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(b.timestamp >= a.timestamp for a, b in zip(frames, frames[1:]))
    assert abs(frames[-1].timestamp - time.time()) < 5
    assert camera.dropped == seqs[-1] - seqs[0] - (len(seqs) - 1)


def test_camera_frames_leave_only_as_keyed_adc_codes(camera):
    shape = camera.frame_shape
    chw = (1, *shape) if len(shape) == 2 else (shape[2], shape[0], shape[1])
    key = sensor_key(Drbg(bytes(32), "hil-camera"), chw, KeyConfig(tile=2))
    stage = PreADCStage(key, SensorModel(read_noise=0.001, seed=1))
    frame = camera.read(timeout=2.0)
    keyed = stage(frame.image)
    assert keyed.dtype == np.uint8 and keyed.shape == frame.image.shape
    plain = adc(frame.image)
    assert not np.array_equal(keyed, plain)
    assert np.corrcoef(keyed.ravel().astype(float), plain.ravel().astype(float))[0, 1] < 0.5
    with pytest.raises(KeyStageError, match="no sensor key"):
        PreADCStage(None)(frame.image)


@pytest.mark.emulator_only
@pytest.mark.parametrize("faults, error", [
    (ReplayFaults(stall_after=3), CameraTimeout),
    (ReplayFaults(disconnect_after=3), CameraDisconnected),
    (ReplayFaults(bad_frame_at=3), CameraFrameError),
])
def test_camera_faults_stop_the_keyed_stream(faults, error):
    """A stalled, vanished or malformed camera raises; nothing reaches or bypasses the key stage."""
    key = sensor_key(Drbg(bytes(32), "hil-faults"), (1, 28, 28), KeyConfig())
    stage = PreADCStage(key, SensorModel())
    keyed = []
    start = time.monotonic()
    with ReplayCamera("samples", fps=200, faults=faults) as cam:
        with pytest.raises(error):
            for _ in range(10):
                keyed.append(stage(cam.read(timeout=0.3).image))
    assert len(keyed) == 3 and time.monotonic() - start < 3
