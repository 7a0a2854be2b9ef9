"""`key_stage: {type: simulated, align_faces: true}`: the simulated pre-ADC stage aligns each plain face crop
to the 5-point template before the key; refused for a faceplate, for frames it cannot align, and without dlib."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from base.errors import ConfigError
from edge.keystage import KEY_STAGES, SimulatedKeyStage
from hardware.digitise import model_input
from hardware.face_align import FaceAligner, similarity, warp
from hardware.preadc import PreADCStage, quantise
from keycam.cli import cli
from keys.drbg import Drbg
from keys.generate import KeyConfig, sensor_key
from tests.kits.edge import write_config

SIDE = 64


def _face_like() -> np.ndarray:
    """A float (64, 64, 3) frame in [0, 1]: a bright oval with two dark eyes and a mouth on a darker ground."""
    ys, xs = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    head = ((xs - 0.5) / 0.32) ** 2 + ((ys - 0.52) / 0.42) ** 2 < 1
    eyes = ((xs - 0.35) ** 2 + (ys - 0.42) ** 2 < 0.004) | ((xs - 0.68) ** 2 + (ys - 0.40) ** 2 < 0.004)
    mouth = (np.abs(xs - 0.5) < 0.12) & (np.abs(ys - 0.74) < 0.02)
    gray = 0.2 + 0.55 * head - 0.45 * (eyes | mouth)
    return np.stack([gray, gray * 0.85, gray * 0.7], axis=-1).astype(np.float32)


def test_align_faces_keys_the_aligned_frame(tmp_path):
    pytest.importorskip("dlib")
    key = sensor_key(Drbg(bytes(32), "align test"), (3, SIDE, SIDE), KeyConfig())
    path = tmp_path / "sensor.key"
    path.write_bytes(key.to_bytes())
    frame = _face_like()
    aligned_stage = SimulatedKeyStage(path, key.fingerprint, align_faces=True)
    plain_stage = SimulatedKeyStage(path, key.fingerprint)
    assert aligned_stage.check().ok and plain_stage.check().ok
    aligner = FaceAligner(SIDE)                     # by hand: landmarks on the codes, the warp on the light
    matrix = similarity(aligner.landmarks(quantise(frame, 8)), aligner.target)
    assert not np.allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-2)
    by_hand = model_input(PreADCStage(key)(warp(frame, matrix, SIDE)), 8)
    keyed = aligned_stage(frame)
    np.testing.assert_array_equal(keyed, by_hand)
    assert np.mean(keyed != plain_stage(frame)) > 0.02       # not the unaligned frame keyed


def test_align_faces_is_a_simulated_key_stage_option_and_refused_for_a_faceplate(tmp_path):
    (tmp_path / "sensor.key").write_bytes(b"x")
    cfg = KEY_STAGES.parse({"type": "simulated", "sensor_key": "sensor.key", "align_faces": True}, "key_stage", tmp_path)
    assert cfg.align_faces
    assert not KEY_STAGES.parse({"type": "simulated", "sensor_key": "sensor.key"}, "key_stage", tmp_path).align_faces
    with pytest.raises(ConfigError, match="key_stage.align_faces: expected true or false"):
        KEY_STAGES.parse({"type": "simulated", "sensor_key": "sensor.key", "align_faces": "yes"}, "key_stage", tmp_path)
    with pytest.raises(ConfigError, match=r"key_stage\.align_faces: a faceplate keys the light before the sensor.*"
                                          r"use key_stage type simulated"):
        KEY_STAGES.parse({"type": "faceplate", "port": "/dev/ttyUSB0", "expected_id": "FP-0001", "align_faces": True},
                         "key_stage", tmp_path)


def test_frames_that_cannot_be_aligned_end_at_startup(tmp_path, device_dir):
    pytest.importorskip("dlib")
    from edge.config_cli import check_device
    cfg = write_config(tmp_path, device_dir, key_stage={"align_faces": True})   # the demo: 28x28 grayscale
    with pytest.raises(ConfigError, match=r"key_stage\.align_faces: .*square RGB.*\(28, 28\)"):
        check_device(cfg)


def test_without_dlib_the_service_refuses_to_start_with_one_line(tmp_path, device_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)            # import dlib now raises ImportError
    cfg = write_config(tmp_path, device_dir, key_stage={"align_faces": True})
    result = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--frames", "5"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: face alignment needs dlib") and "pip install dlib-bin==20.0.1" in lines[-1]
    assert "Traceback" not in result.output
