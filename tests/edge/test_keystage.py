"""Key-stage health: simulated pre-ADC with the sensor key file, and the faceplate over the emulator."""
from __future__ import annotations

import numpy as np
import pytest

from edge.keystage import FaceplateKeyStage, SimulatedKeyStage, load_sensor_key
from edge.runtime import TFLiteModel
from hardware.errors import KeyStageError
from hardware.preadc import SensorModel
from keys.drbg import Drbg
from keys.generate import KeyConfig, sensor_key

FRAME = np.linspace(0, 1, 784, dtype=np.float32).reshape(28, 28)


def _expected(device_dir) -> str:
    return TFLiteModel(device_dir / "model.tflite").metadata["sensor_fingerprint"]


def test_matching_key_is_healthy_and_keys_frames(device_dir):
    stage = SimulatedKeyStage(device_dir / "sensor.key", _expected(device_dir))
    with pytest.raises(KeyStageError):
        stage(FRAME)                      # not checked yet: refuses
    assert stage.check().ok
    keyed = stage(FRAME)
    assert keyed.dtype == np.uint8 and keyed.shape == (28, 28)
    plain = np.round(FRAME * 255).astype(np.uint8)
    assert np.mean(keyed == plain) < 0.2  # the keyed frame is not the plain one
    key = load_sensor_key(device_dir / "sensor.key")
    assert key.fingerprint == _expected(device_dir)


def test_missing_wrong_and_corrupt_keys_fail_closed(device_dir):
    expected = _expected(device_dir)
    path = device_dir / "sensor.key"
    stage = SimulatedKeyStage(path, expected)
    assert stage.check().ok
    other = sensor_key(Drbg(bytes(32), "another device"), (1, 28, 28), KeyConfig())
    path.write_bytes(other.to_bytes())
    health = stage.check()
    assert (health.ok, health.reason) == (False, "sensor_key_mismatch")
    with pytest.raises(KeyStageError):
        stage(FRAME)
    path.write_bytes(b"garbage")
    assert stage.check().reason == "key_stage_error"
    path.unlink()
    assert stage.check().reason == "sensor_key_missing"
    assert SimulatedKeyStage(device_dir / "x", "").check().reason == "sensor_key_mismatch"


def test_deeper_adc_goes_to_the_model_as_float(device_dir):
    stage = SimulatedKeyStage(device_dir / "sensor.key", _expected(device_dir), SensorModel(bits=10))
    assert stage.check().ok
    keyed = stage(FRAME)
    assert keyed.dtype == np.float32 and 0.0 <= keyed.min() and keyed.max() <= 1.0


@pytest.mark.faceplate
def test_faceplate_health_follows_the_actuator():
    from hardware.faceplate_emulator import EmulatorProcess
    with EmulatorProcess() as emu:
        stage = FaceplateKeyStage(emu.port, "FP-0001")
        try:
            first = stage.check()             # power-up: turret at the empty slot
            assert not first.ok and first.reason in ("faceplate_wrong_id", "faceplate_not_engaged")
            with pytest.raises(KeyStageError):
                stage(FRAME)
            stage.actuator().home()
            assert stage.check().reason == "faceplate_not_engaged"
            stage.actuator().engage()
            assert stage.check().ok
            assert stage(FRAME).dtype == np.uint8
        finally:
            stage.close()
        wrong = FaceplateKeyStage(emu.port, "FP-0002")    # FP-0001 is engaged, FP-0002 expected
        try:
            assert wrong.check().reason == "faceplate_wrong_id"
            emu.stop()
            health = wrong.check()
            assert (health.ok, health.reason) == (False, "faceplate_unreachable")
        finally:
            wrong.close()
    assert FaceplateKeyStage("/dev/nonexistent-tty", "FP-0001").check().reason == "faceplate_unreachable"
