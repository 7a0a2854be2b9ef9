"""Issue 16 CLI conventions of the root group: one --log-level/-v/-q for every command, and no
TFLite runtime INFO line in command output."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from base.cli import level_from

ROOT = Path(__file__).resolve().parents[2]


def keycam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from keycam.cli import main; main()", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name, verbose, quiet, level", [
    ("warning", 0, 0, logging.WARNING), ("warning", 1, 0, logging.INFO), ("warning", 2, 0, logging.DEBUG),
    ("warning", 5, 0, logging.DEBUG), ("warning", 0, 1, logging.ERROR), ("info", 0, 0, logging.INFO),
    ("debug", 0, 9, logging.ERROR),
])
def test_level_from_options(name, verbose, quiet, level):
    assert level_from(name, verbose, quiet) == level


def test_no_tflite_runtime_line_in_command_output():
    proc = keycam("config", "check", "examples/sim-device.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr + proc.stdout and proc.stdout.startswith("OK ")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_global_verbosity_reaches_the_service_logs(sim_config):
    cfg = sim_config
    loud = keycam("-v", "run", "--config", str(cfg), "--frames", "5")
    assert loud.returncode == 0 and "metrics on http://127.0.0.1:" in loud.stderr, loud.stderr
    quiet = keycam("--log-level", "error", "run", "--config", str(cfg), "--frames", "5")
    assert quiet.returncode == 0 and " INFO " not in quiet.stderr and "XNNPACK" not in quiet.stderr
