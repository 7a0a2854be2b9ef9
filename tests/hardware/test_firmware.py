"""Actuator firmware state machine, driven with an explicit clock (no I/O)."""
from __future__ import annotations

import pytest

from hardware.faceplate_emulator import Emulator, LinkFaults
from hardware.faceplate_firmware import Firmware, FirmwareConfig
from hardware.protocol import decode_reply, encode_request


class Bench:
    def __init__(self, **cfg):
        self.fw = Firmware(FirmwareConfig(**cfg))
        self.seq = 0

    def send(self, now: float, *cmd, seq: int | None = None):
        self.seq = (self.seq + 1) % 256 if seq is None else seq
        return decode_reply(self.fw.handle(encode_request(self.seq, *cmd), now))


def test_motion_takes_step_time_per_slot_and_homing_sets_position():
    b = Bench(step_time=0.1, start_slot=3)
    assert b.send(0.0, "STAT").fields["pos"] == "-1"
    assert b.send(0.0, "HOME").fields["mov"] == "1"
    assert b.send(0.25, "STAT").fields["mov"] == "1"
    done = b.send(0.31, "STAT").fields
    assert (done["pos"], done["mov"], done["homed"], done["id"]) == ("0", "0", "1", "FP-0001")
    b.send(0.4, "MOVE", 2)
    assert b.send(0.45, "STAT").fields["id"] == "-"          # unknown while moving
    assert b.send(0.61, "STAT").fields["pos"] == "2"


@pytest.mark.parametrize("setup, command, error", [
    ([], ("MOVE", 1), "NOT_HOMED"),
    ([], ("ENGAGE",), "NOT_HOMED"),
    ([("HOME",)], ("MOVE", 9), "RANGE"),
    ([("HOME",)], ("MOVE", -1), "RANGE"),
    ([("HOME",)], ("MOVE", "x"), "ARG"),
    ([("HOME",)], ("MOVE",), "ARG"),
    ([("HOME",)], ("FLY",), "UNKNOWN"),
    ([("HOME",), ("ENGAGE",)], ("MOVE", 1), "ENGAGED"),
    ([("HOME",), ("ENGAGE",)], ("HOME",), "ENGAGED"),
])
def test_commands_are_refused_with_error_codes(setup, command, error):
    b = Bench(start_slot=0)
    for step in setup:
        assert b.send(1.0, *step).ok
    reply = b.send(1.0, *command)
    assert not reply.ok and reply.error_name == error


def test_busy_while_moving_and_no_faceplate_in_an_empty_slot():
    b = Bench(step_time=0.1, start_slot=0)
    b.send(0.0, "HOME")
    b.send(0.0, "MOVE", 3)
    assert b.send(0.1, "ENGAGE").error_name == "BUSY"
    assert b.send(0.1, "MOVE", 1).error_name == "BUSY"
    assert b.send(0.5, "ENGAGE").error_name == "NO_FACEPLATE"


def test_stuck_motor_latches_stall_until_the_next_motion():
    b = Bench(stuck=True, stall_timeout=0.2, start_slot=0)
    b.send(0.0, "HOME")
    assert b.send(0.1, "STAT").fields["mov"] == "1"
    stalled = b.send(0.3, "STAT").fields
    assert (stalled["mov"], stalled["err"]) == ("0", "9")
    b.fw.cfg.stuck = False
    b.send(0.4, "HOME")
    assert b.send(0.5, "STAT").fields["err"] == "0"
    assert b.send(0.5, "ENGAGE").ok


def test_retransmitted_mutating_request_is_answered_from_cache_not_rerun():
    b = Bench(step_time=0.1, start_slot=0)
    b.send(0.0, "HOME", seq=10)
    first = b.send(0.05, "MOVE", 3, seq=11)
    again = b.send(0.1, "MOVE", 3, seq=11)             # same seq + request: a retransmission
    assert again == first and again.ok                  # not BUSY: not executed a second time
    assert b.send(0.15, "MOVE", 3, seq=12).error_name == "BUSY"   # a new request is executed
    late = b.send(5.0, "MOVE", 2, seq=11)               # outside the dedupe window: a new command
    assert late.ok and late.fields["mov"] == "1"


def test_bad_crc_gets_an_error_reply_and_noise_gets_none():
    fw = Firmware(FirmwareConfig())
    assert decode_reply(fw.handle(b"@33 STAT*0000", 0.0)).error_name == "CRC"
    assert fw.handle(b"random line noise", 0.0) is None
    assert decode_reply(fw.handle(b"\x00garbage" + encode_request(4, "ID"), 0.0)).ok


def test_config_and_fault_validation():
    with pytest.raises(ValueError):
        FirmwareConfig(faceplates=[])
    with pytest.raises(ValueError):
        FirmwareConfig(start_slot=9)
    with pytest.raises(ValueError):
        LinkFaults(drop=1.5)
    with pytest.raises(ValueError):
        LinkFaults(delay=-1)


def test_garble_always_changes_the_reply():
    emu = Emulator(Firmware(FirmwareConfig()), LinkFaults(seed=1))
    reply = encode_request(1, "STAT")
    for _ in range(200):
        garbled = emu._garble(reply)
        assert garbled != reply and garbled.endswith(b"\n") and garbled.count(b"\n") == 1
