"""Fixtures for the graph IR tests (the graphs themselves are built by tests.kits.graphs)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.kits.graphs import build_graph


@pytest.fixture
def graph_onnx(tmp_path):
    """case -> ONNX path, built on first use."""
    built: dict = {}

    def get(case: str):
        if case not in built:
            built[case] = build_graph(case, tmp_path / f"{case}.onnx", np.random.default_rng(7))
        return built[case]
    return get
