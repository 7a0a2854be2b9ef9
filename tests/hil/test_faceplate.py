"""Faceplate actuator over a real serial link: the real device with --hil, else the emulator process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hardware.errors import FaceplateCommandError, FaceplateMismatch

pytestmark = [pytest.mark.faceplate, pytest.mark.timeout(60)]


def keycam(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed `keycam` console script from a shell-like subprocess."""
    exe = Path(sys.executable).with_name("keycam")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)


def test_identify_and_status_describe_the_actuator(faceplate):
    ident = faceplate.identify()
    assert ident.firmware and ident.unit and ident.slots >= 1
    state = faceplate.status()
    assert isinstance(state.engaged, bool) and isinstance(state.moving, bool) and state.error_code >= 0
    assert state.firmware == ident.firmware


def test_home_move_engage_verify_disengage(faceplate, faceplate_expected):
    faceplate.disengage()
    assert faceplate.home().position == 0
    target = faceplate_expected["position"]
    state = faceplate.move(target)
    assert state.position == target and not state.moving and state.error is None
    assert faceplate.engage().engaged
    verified = faceplate.verify(faceplate_expected["faceplate_id"], target)
    assert verified.faceplate_id == faceplate_expected["faceplate_id"]
    with pytest.raises(FaceplateCommandError, match="ENGAGED"):
        faceplate.move(target)                     # the clamp must be released before any motion
    faceplate.disengage()
    with pytest.raises(FaceplateMismatch, match="not engaged"):
        faceplate.verify(faceplate_expected["faceplate_id"], target)


def test_wrong_faceplate_fails_closed(faceplate, faceplate_expected):
    faceplate.disengage()
    faceplate.home()
    faceplate.move(faceplate_expected["position"])
    faceplate.engage()
    with pytest.raises(FaceplateMismatch, match="expects FP-WRONG"):
        faceplate.verify("FP-WRONG")
    with pytest.raises(FaceplateMismatch, match="position"):
        faceplate.verify(faceplate_expected["faceplate_id"], faceplate_expected["position"] + 1)
    faceplate.disengage()


def test_out_of_range_move_is_refused(faceplate):
    faceplate.disengage()
    faceplate.home()
    slots = faceplate.identify().slots
    with pytest.raises(FaceplateCommandError, match="RANGE") as info:
        faceplate.move(slots)
    assert info.value.name == "RANGE"


def test_cli_status_json_from_a_shell(faceplate_port):
    result = keycam("hw", "faceplate", "--port", faceplate_port, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["firmware"] and "position" in status and "engaged" in status


def test_cli_home_then_move_json(faceplate_port, faceplate_expected):
    assert keycam("hw", "faceplate", "--port", faceplate_port, "disengage").returncode == 0
    home = keycam("hw", "faceplate", "--port", faceplate_port, "home", "--json")
    assert home.returncode == 0, home.stderr
    assert json.loads(home.stdout)["position"] == 0
    moved = keycam("hw", "faceplate", "--port", faceplate_port, "move", str(faceplate_expected["position"]), "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["position"] == faceplate_expected["position"]


@pytest.mark.emulator_only
def test_keycam_emulate_faceplate_prints_its_pty_and_serves_it(tmp_path):
    """The acceptance path: `keycam hw emulate-faceplate` in one shell, the driver CLI in another."""
    exe = Path(sys.executable).with_name("keycam")
    link = tmp_path / "faceplate0"
    proc = subprocess.Popen([str(exe), "hw", "emulate-faceplate", "--link", str(link)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = proc.stdout.readline().strip()
        assert printed == str(link) and link.resolve().as_posix().startswith("/dev/pts/")
        result = keycam("hw", "faceplate", "--port", printed, "status", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["unit"] == "ACT-EMU-01"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert not link.exists()                   # the emulator removes its link on exit
