"""Fixtures for the scaling tests: tiny zoo models exported to ONNX once per session."""
from __future__ import annotations

import pytest

from tools.models_zoo import ZOO, export_random
from tools.onnx_import import load_onnx


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """ONNX paths of the tiny variants (same layer structure, narrow) of every zoo model."""
    root = tmp_path_factory.mktemp("zoo")
    return {name: export_random(name, root / f"{name}.onnx", seed=3, tiny=True) for name in ZOO}


@pytest.fixture(scope="session")
def tiny_nets(tiny_onnx):
    return {name: load_onnx(path) for name, path in tiny_onnx.items()}
