"""Device YAML validation: the shipped example loads; every kind of mistake is one clear error."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from base.errors import ConfigError
from edge.config import load_config
from edge.sinks import MqttSinkConfig
from tests.kits.edge import ROOT, SIM_YAML, write_config


def test_shipped_example_loads_with_paths_resolved_next_to_it():
    cfg = load_config(SIM_YAML)
    assert cfg.device_id == "sim-0001" and cfg.key_stage.type == "simulated"
    assert cfg.model.path == str(SIM_YAML.parent / "sim-device" / "model.tflite")
    assert cfg.sinks[0].type == "stdout" and cfg.metrics.port == 9464


def test_faceplate_mqtt_example_is_schema_valid_apart_from_device_paths(tmp_path):
    data = yaml.safe_load((SIM_YAML.parent / "pi-faceplate-mqtt.yaml").read_text())
    data["model"]["path"] = str(SIM_YAML.parent / "sim-device" / "model.tflite")
    path = tmp_path / "pi.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.key_stage.expected_id == "FP-0001"
    assert isinstance(cfg.sinks[0], MqttSinkConfig) and cfg.sinks[0].buffer == 5000


@pytest.mark.parametrize("sections, message", [
    ({"modle": {}}, "unknown key modle"),
    ({"model": {"top_k": "three"}}, r"model.top_k: expected an integer, got 'three'"),
    ({"model": {"top_k": 0}}, r"model.top_k: must be 1..10"),
    ({"model": {"path": "nowhere.tflite"}}, r"model.path: file not found: .*nowhere.tflite"),
    ({"model": {"num_threads": True}}, r"model.num_threads: expected an integer"),
    ({"model": {"watch_interval_s": -1}}, r"model.watch_interval_s: must be >= 0"),
    ({"key_stage": {"sensor_key": None}}, r"key_stage.sensor_key: required key is missing"),
    ({"key_stage": {"type": "magic"}}, r"key_stage.type: unknown key stage type 'magic'; must be one of simulated, faceplate"),
    ({"key_stage": {"port": "/dev/ttyS0"}}, r"key_stage: unknown key port"),
    ({"key_stage": {"retry_initial_s": 5, "retry_max_s": 1}}, r"key_stage.retry_max_s: must be >= retry_initial_s"),
    ({"key_stage": {"type": "faceplate", "sensor_key": None, "port": "/dev/ttyS0"}},
     r"key_stage: unknown keys sensor, sensor_key \(allowed: type, .*port, expected_id"),
    ({"key_stage": {"colour": 1}}, r"key_stage: unknown key colour"),
    ({"pipeline": {"queue_size": 0}}, r"pipeline.queue_size: must be 1..1024"),
    ({"pipeline": {"max_record_bytes": 100000}}, r"pipeline.max_record_bytes: must be 64..8192"),
    ({"metrics": {"port": 70000}}, r"metrics.port: must be 0..65535"),
    ({"metrics": "on"}, r"metrics: expected a mapping"),
    ({"sinks": []}, r"sinks: expected a non-empty list"),
    ({"sinks": [{"type": "email"}]}, r"sinks\[0\].type: unknown sink type 'email'; must be one of stdout, serial, mqtt"),
    ({"sinks": ["stdout"]}, r"sinks\[0\]: expected a mapping"),
    ({"sinks": {"type": "stdout"}}, r"sinks: expected a list"),
    ({"sinks": [{"type": "mqtt"}]}, r"sinks\[0\].topic: required key is missing"),
    ({"sinks": [{"type": "mqtt", "topic": "a/#"}]}, r"sinks\[0\].topic: must be a non-empty topic"),
    ({"sinks": [{"type": "mqtt", "topic": "t", "buffer": 0}]}, r"sinks\[0\].buffer: must be 1..1000000"),
    ({"sinks": [{"type": "serial"}]}, r"sinks\[0\].port: required key is missing"),
    ({"sinks": [{"type": "stdout", "colour": True}]}, r"sinks\[0\]: unknown key colour"),
    ({"device_id": "has space"}, r"device_id: must be 1..64 of letters"),
    ({"device_id": "cam/01"}, r"device_id: must be 1..64 of letters"),    # one id rule: provisioning refuses it too
    ({"camera": {"type": None}}, r"camera.type: required key is missing \(one of replay, picamera2\)"),
])
def test_each_mistake_is_one_clear_error(tmp_path, device_dir, sections, message):
    path = write_config(tmp_path, device_dir, **sections)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_required_section_and_bad_files(tmp_path, device_dir):
    path = write_config(tmp_path, device_dir)
    data = yaml.safe_load(path.read_text())
    del data["model"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="model: required key is missing"):
        load_config(path)
    path.write_text("camera: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_relative_paths_resolve_against_the_config_folder(tmp_path, device_dir):
    path = write_config(tmp_path, device_dir, model={"path": "device/model.tflite"},
                        key_stage={"sensor_key": "device/sensor.key"})
    cfg = load_config(path)
    assert cfg.model.path == str(tmp_path / "device" / "model.tflite")
    assert cfg.key_stage.sensor_key == str(tmp_path / "device" / "sensor.key")


def test_relative_camera_source_resolves_against_the_config_folder_from_any_cwd(tmp_path, device_dir):
    """The systemd unit runs from /: a replay source next to the YAML must still be found."""
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "frames.npz", images=frames)
    path = write_config(tmp_path, device_dir, camera={"source": "frames.npz"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys; from edge.config import load_config; from hardware.camera import make_camera; "
            "cfg = load_config(sys.argv[1]); cam = make_camera(cfg.camera); print(cfg.camera.source, len(cam.images))")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=elsewhere, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "frames.npz"), "3"]


def test_missing_camera_type_is_refused_the_same_everywhere(tmp_path, device_dir):
    from hardware.camera import CAMERAS
    data = yaml.safe_load(write_config(tmp_path, device_dir).read_text())
    del data["camera"]["type"]
    path = tmp_path / "untyped.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"camera.type: required key is missing"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"camera.type: required key is missing"):
        CAMERAS.parse(data["camera"], "camera")
