"""Fixtures shared by the whole suite (a pytest plugin, registered in tests/conftest.py): a seeded
generator, the small CNN, plain frames for it, and the simulated device's config."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.kits.onnx import build_small_cnn


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def small_cnn(tmp_path, rng):
    """A small CNN covering every supported op, as an ONNX file."""
    return build_small_cnn(tmp_path / "small.onnx", rng)


@pytest.fixture
def frames(rng):
    """Plain float frames in [0, 1] for the small CNN."""
    return rng.uniform(0, 1, (16, 1, 12, 12))


@pytest.fixture
def sim_config(tmp_path) -> Path:
    """examples/sim-device.yaml with absolute file paths, an ephemeral metrics port and a discard sink."""
    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "examples" / "sim-device.yaml").read_text())
    doc["key_stage"]["sensor_key"] = str(root / "examples" / "sim-device" / "sensor.key")
    doc["model"]["path"] = str(root / "examples" / "sim-device" / "model.tflite")
    doc["metrics"]["port"] = 0
    doc["sinks"] = [{"type": "discard"}]
    cfg = tmp_path / "device.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    return cfg
