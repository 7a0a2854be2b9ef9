"""Shared victims for the attack tests: small slices of MNIST against the shipped LeNet."""
from __future__ import annotations

import pytest

from tools.attacks.target import build_target


@pytest.fixture(scope="session")
def full_target():
    return build_target("mnist", "full", limit=60, train_limit=300)


@pytest.fixture(scope="session")
def stem_target():
    return build_target("mnist", "stem", limit=60, train_limit=300)


@pytest.fixture(scope="session")
def scatter4_target():
    return build_target("mnist", "scatter4", limit=60, train_limit=300)
