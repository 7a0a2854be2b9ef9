"""Fault injection over the real pty link to a separate emulator process.

Every fault must end in a successful retry or a clear FaceplateError, within a bounded time.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from hardware.errors import (
    FaceplateCommandError,
    FaceplateDisconnected,
    FaceplateMotorError,
    FaceplateProtocolError,
    FaceplateTimeout,
)
from hardware.faceplate import SerialFaceplate

pytestmark = [pytest.mark.faceplate, pytest.mark.emulator_only, pytest.mark.timeout(30)]


def connect(port: str, **kw) -> SerialFaceplate:
    options = dict(timeout=0.2, retries=3, backoff=0.02, move_timeout=3.0)
    options.update(kw)
    return SerialFaceplate(port, **options)


class Bounded:
    """Context manager asserting that the block finished within `limit` seconds."""

    def __init__(self, limit: float):
        self.limit = limit

    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.start
        assert self.elapsed < self.limit, f"took {self.elapsed:.2f}s, bound {self.limit}s"
        return False


def test_every_reply_dropped_gives_a_timeout_after_bounded_retries(emulated_faceplate):
    emu = emulated_faceplate("--drop", "1")
    with connect(emu.port, retries=2) as fp, Bounded(2.0):
        with pytest.raises(FaceplateTimeout, match="after 3 attempts"):
            fp.status()


def test_some_replies_dropped_are_recovered_by_retries(emulated_faceplate):
    emu = emulated_faceplate("--drop", "0.3", "--seed", "3")
    with connect(emu.port, retries=8) as fp, Bounded(10.0):
        fp.home()
        assert fp.move(2).position == 2
        assert fp.status().position == 2
        assert fp.stats["retries"] >= 1


def test_dropped_reply_to_a_move_does_not_run_it_twice(emulated_faceplate):
    """A retransmitted MOVE is recognised by its sequence number and answered from the actuator's
    cache; executing it again while the motor runs would answer BUSY and fail the move."""
    emu = emulated_faceplate("--drop", "0.5", "--only", "MOVE,HOME", "--seed", "1", "--step-time", "0.05", "-v")
    with connect(emu.port, retries=8) as fp, Bounded(10.0):
        fp.home()
        for target in (3, 1, 2, 0, 3):
            assert fp.move(target).position == target
        assert fp.stats["retries"] >= 1
    emu.stop()
    assert "fault: drop b'#" in emu.log and "BUSY" not in emu.log


def test_always_garbled_replies_give_a_protocol_error(emulated_faceplate):
    emu = emulated_faceplate("--garble", "1")
    with connect(emu.port, retries=2) as fp, Bounded(2.0):
        with pytest.raises(FaceplateProtocolError, match="corrupt reply"):
            fp.identify()
        assert fp.stats["corrupt"] >= 3


def test_sometimes_garbled_replies_are_retried(emulated_faceplate):
    emu = emulated_faceplate("--garble", "0.4", "--seed", "5")
    with connect(emu.port, retries=8) as fp, Bounded(10.0):
        assert fp.identify().slots == 4
        for _ in range(5):
            assert fp.status().firmware == "1.2.0"
        assert fp.stats["corrupt"] >= 1


def test_line_noise_before_replies_is_skipped_without_retries(emulated_faceplate):
    emu = emulated_faceplate("--noise", "1", "--seed", "2")
    with connect(emu.port) as fp, Bounded(5.0):
        fp.home()
        assert fp.move(1).position == 1
        assert fp.stats["retries"] == 0


def test_garbage_sent_to_the_actuator_is_resynchronised(emulated_faceplate):
    emu = emulated_faceplate()
    with connect(emu.port) as fp, Bounded(3.0):
        fp._ser.write(b"\x00\xffjunk @7 MOVE")              # a half line of noise on the host side
        assert fp.status().error is None
        fp._ser.write(b"@01 MOVE 1*0000\n")                 # a whole frame with a bad CRC
        assert fp.identify().firmware == "1.2.0"


def test_slow_replies_within_the_timeout_succeed(emulated_faceplate):
    emu = emulated_faceplate("--delay", "0.1")
    with connect(emu.port, timeout=0.5) as fp, Bounded(3.0):
        assert fp.status().firmware == "1.2.0"
        assert fp.stats["retries"] == 0


def test_replies_slower_than_the_timeout_fail_with_a_timeout(emulated_faceplate):
    emu = emulated_faceplate("--delay", "1.0")
    with connect(emu.port, timeout=0.2, retries=1) as fp, Bounded(2.0):
        with pytest.raises(FaceplateTimeout):
            fp.status()


def test_occasionally_late_replies_are_recovered(emulated_faceplate):
    emu = emulated_faceplate("--delay", "0.3", "--delay-rate", "0.5", "--seed", "4")
    with connect(emu.port, timeout=0.2, retries=8) as fp, Bounded(15.0):
        fp.home()
        assert fp.move(2).position == 2


def test_stuck_motor_is_reported_as_a_motor_error(emulated_faceplate):
    emu = emulated_faceplate("--stuck", "--stall-timeout", "0.2")
    with connect(emu.port) as fp, Bounded(3.0):
        with pytest.raises(FaceplateMotorError, match="STALL"):
            fp.home()
        assert fp.status().error == "STALL"
        with pytest.raises(FaceplateCommandError, match="NOT_HOMED"):
            fp.engage()                                    # never clamps a faceplate at an unknown slot


def test_motion_slower_than_the_move_timeout_fails(emulated_faceplate):
    emu = emulated_faceplate("--step-time", "1.0", "--start-slot", "3")
    with connect(emu.port, move_timeout=0.4) as fp, Bounded(3.0):
        with pytest.raises(FaceplateTimeout, match="did not reach position 0"):
            fp.home()


def test_disconnect_mid_session_is_a_clear_error(emulated_faceplate):
    emu = emulated_faceplate("--disconnect-after", "2")
    with connect(emu.port) as fp, Bounded(5.0):
        fp.status()
        with pytest.raises(FaceplateDisconnected, match="disconnected"):
            for _ in range(3):
                fp.status()


def test_emulator_killed_mid_session_is_a_clear_error(emulated_faceplate):
    emu = emulated_faceplate()
    with connect(emu.port) as fp, Bounded(5.0):
        fp.status()
        os.kill(emu.proc.pid, signal.SIGKILL)
        emu.proc.wait(5)
        with pytest.raises(FaceplateDisconnected):
            fp.status()


def test_missing_port_is_a_clear_error(tmp_path):
    from hardware.errors import FaceplateError

    with pytest.raises(FaceplateError, match="cannot open faceplate serial port"):
        SerialFaceplate(str(tmp_path / "ttyNONE"))


def test_emulator_on_a_socat_pty_pair(tmp_path, emulated_faceplate):
    """The same driver code path over a socat-made pair of ptys with stable names."""
    import shutil
    import subprocess

    if not shutil.which("socat"):
        pytest.skip("socat is not installed (scripts/bootstrap.sh test installs it)")
    a, b = tmp_path / "fp-a", tmp_path / "fp-b"
    socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()) and time.monotonic() < deadline:
            time.sleep(0.02)
        emu = emulated_faceplate("--port", str(a), "--garble", "0.3", "--seed", "9")
        assert emu.port == str(a)
        with connect(str(b), retries=8) as fp, Bounded(10.0):
            fp.home()
            assert fp.move(1).faceplate_id == "FP-0002"
    finally:
        socat.terminate()
        socat.wait(5)
