"""Fixtures for the device-runtime tests: a real mosquitto broker, the shipped simulated device, a
second independently keyed device, and device configs written into tmp folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.kits.edge import MOSQUITTO, SIM_DIR, Broker, CollectSink, Running


@pytest.fixture
def broker(tmp_path):
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto; scripts/bootstrap.sh test does)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def other_device(tmp_path_factory) -> Path:
    """A second device keyed from the same base model with another secret: model.tflite + sensor.key."""
    from tools.keying.provision import build_keyed_model
    from tools.make_sim_device import default_onnx
    out = tmp_path_factory.mktemp("other-device")
    prov = build_keyed_model(default_onnx(), bytes(range(32)), "sim-0002", profile="full", float_model=False)
    (out / "model.tflite").write_bytes(prov.tflite_int8)
    (out / "sensor.key").write_bytes(prov.keyset.sensor.to_bytes())
    return out


@pytest.fixture
def device_dir(tmp_path) -> Path:
    """A private copy of the shipped simulated device's model and sensor key (tests may change it)."""
    d = tmp_path / "device"
    shutil.copytree(SIM_DIR, d)
    return d


@pytest.fixture(scope="session")
def encrypted_device(tmp_path_factory) -> Path:
    """The demo device with output encryption: model.tflite, sensor.key, and the key set (host side)."""
    from tools.keying.provision import build_keyed_model
    from tools.make_sim_device import DEMO_SECRET, default_onnx
    out = tmp_path_factory.mktemp("encrypted-device")
    prov = build_keyed_model(default_onnx(), DEMO_SECRET, "sim-0003", profile="full", output_encryption=True,
                             float_model=False)
    (out / "model.tflite").write_bytes(prov.tflite_int8)
    (out / "sensor.key").write_bytes(prov.keyset.sensor.to_bytes())
    prov.keyset.save(out / "keyset.bin")
    return out


@pytest.fixture
def collect(monkeypatch) -> CollectSink:
    sink = CollectSink()
    monkeypatch.setattr("edge.service.make_sink", lambda spec: sink)
    return sink


@pytest.fixture(autouse=True)
def stop_leftover_services():
    """Stop any service a failed test left running (it would log into the tests after it)."""
    yield
    while Running.live:
        Running.live.pop().service.request_stop()
