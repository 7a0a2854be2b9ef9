"""`keycam run` with `identity:`: model and sensor key are opened from sealed files into memory only;
clear, foreign and misplaced files are refused in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from base.signing import raw_private, raw_public
from keys.device_files import DeviceFiles
from keys.keystore import FileKeyStore
from keys.sealing import ROLE_MODEL, ROLE_SENSOR_KEY, SealedFileError, context_for, seal
from tests.kits.edge import ROOT, write_config

KEYCAM = [sys.executable, "-c", "from keycam.cli import main; main()"]
DEVICE = "sim-0001"          # the device id of the shipped demo config


def _identity(folder, key: X25519PrivateKey):
    FileKeyStore.create(folder, raw_private(key))
    return folder


def _seal_device(device_dir, key: X25519PrivateKey, device_id: str = DEVICE) -> None:
    for name, role in (("model.tflite", ROLE_MODEL), ("sensor.key", ROLE_SENSOR_KEY)):
        path = device_dir / name
        path.write_bytes(seal(raw_public(key), path.read_bytes(), context_for(device_id, role)))


def _run(config, frames: int = 5) -> subprocess.CompletedProcess:
    return subprocess.run(KEYCAM + ["run", "--config", str(config), "--frames", str(frames)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_sealed_device_runs_and_clear_or_foreign_files_are_refused(tmp_path, device_dir):
    key = X25519PrivateKey.generate()
    identity = _identity(tmp_path / "identity", key)
    clear = write_config(tmp_path, device_dir, identity=str(identity))
    res = _run(clear)                                 # an identity makes sealed files mandatory
    assert res.returncode != 0 and "clear TFLite model" in res.stderr.strip().splitlines()[-1]

    _seal_device(device_dir, key)
    res = _run(clear)
    assert res.returncode == 0, res.stderr
    assert "keycam run: 5 frames" in res.stderr and "read in clear" not in res.stderr
    assert not list(tmp_path.rglob("*.tflite.*")), "nothing is written beside the sealed files"

    other = _identity(tmp_path / "other-identity", X25519PrivateKey.generate())
    res = _run(write_config(tmp_path, device_dir, identity=str(other)))
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode != 0 and "sealed to device key" in last and "this device's key is" in last

    res = _run(write_config(tmp_path, device_dir))   # sealed files but no identity: say what is missing
    assert res.returncode != 0 and "add `identity: PATH`" in res.stderr


def test_device_files_policy(tmp_path, device_dir):
    key = X25519PrivateKey.generate()
    files = DeviceFiles(DEVICE, _identity(tmp_path / "identity", key))
    model = (device_dir / "model.tflite").read_bytes()
    with pytest.raises(SealedFileError, match="clear TFLite model"):
        files.open(model, ROLE_MODEL, "model.tflite")
    sealed = seal(raw_public(key), model, context_for(DEVICE, ROLE_MODEL))
    assert files.open(sealed, ROLE_MODEL, "model.tflite") == model
    with pytest.raises(SealedFileError, match="expected 'sim-0001/sensor-key'"):
        files.open(sealed, ROLE_SENSOR_KEY, "sensor.key")        # a model put where the sensor key goes
    with pytest.raises(SealedFileError, match="not a keycam sealed file"):
        files.open(b"garbage" * 10, ROLE_SENSOR_KEY, "sensor.key")
    assert DeviceFiles(DEVICE, None).open(model, ROLE_MODEL, "m") == model   # the public demo: clear
    with pytest.raises(SealedFileError, match="identity"):
        DeviceFiles(DEVICE, None).open(sealed, ROLE_MODEL, "m")


def test_identity_must_be_a_directory(tmp_path, device_dir):
    res = _run(write_config(tmp_path, device_dir, identity=str(tmp_path / "nope")))
    assert res.returncode != 0 and "identity: directory not found" in res.stderr.strip().splitlines()[-1]
