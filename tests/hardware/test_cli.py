"""`keycam hw ...` through the root CLI (CliRunner), against an emulator process."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hardware.faceplate_emulator import EmulatorProcess
from keycam.cli import cli

pytestmark = pytest.mark.timeout(60)


def run(*args):
    return CliRunner().invoke(cli, ["hw", *args])


def test_faceplate_commands_human_and_json_output():
    with EmulatorProcess(["--faceplates", "FP-A,FP-B"]) as emu:
        out = run("faceplate", "--port", emu.port, "home")
        assert out.exit_code == 0 and "position      0" in out.output
        moved = json.loads(run("faceplate", "--port", emu.port, "move", "1", "--json").stdout)
        assert moved["position"] == 1 and moved["faceplate_id"] == "FP-B"
        assert json.loads(run("faceplate", "--port", emu.port, "engage", "--json").stdout)["engaged"]
        refused = run("faceplate", "--port", emu.port, "move", "0")
        assert refused.exit_code != 0 and "ENGAGED" in refused.output and "Traceback" not in refused.output
        status = json.loads(run("faceplate", "--port", emu.port, "status", "--json").stdout)
        assert status["slots"] == 2 and status["engaged"] is True
        assert run("faceplate", "--port", emu.port, "move", "-1").exit_code == 2   # rejected by click


def test_unreachable_port_is_a_one_line_error(tmp_path):
    out = run("faceplate", "--port", str(tmp_path / "ttyX"), "status")
    assert out.exit_code == 1 and "cannot open faceplate serial port" in out.output


def test_emulator_rejects_bad_fault_settings():
    out = run("emulate-faceplate", "--drop", "2")
    assert out.exit_code == 1 and "must be within 0..1" in out.output


def test_camera_probe_reports_frames_and_drops():
    out = run("camera", "--frames", "5", "--json")
    report = json.loads(out.stdout)
    assert report["shape"] == [28, 28] and report["frames"] == 5 and report["dropped"] == 0
    missing = run("camera", "--source", "picamera2")
    assert missing.exit_code == 1 and "picamera2 is not available" in missing.output
