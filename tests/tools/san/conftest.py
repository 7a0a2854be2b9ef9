"""Shared fixtures of the SAN tests: torch single-threaded, the real LFW / MNIST slices from the research data
folder (README, Data)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
