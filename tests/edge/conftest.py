"""Fixtures for the device-runtime tests."""
from __future__ import annotations

from pathlib import Path

import pytest
from edge_testkit import MOSQUITTO, Broker


@pytest.fixture
def broker(tmp_path):
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed (apt-get install mosquitto; scripts/bootstrap.sh test does)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()
