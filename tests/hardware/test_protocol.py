"""Faceplate wire format: CRC, framing, parsing, corruption detection."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.protocol import ERROR_BY_NAME, FrameError, crc16, decode, decode_reply, encode_reply, encode_request


def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_request_round_trip_and_exact_bytes():
    line = encode_request(0x2A, "MOVE", 3)
    assert line.startswith(b"@2A MOVE 3*") and line.endswith(b"\n") and len(line) == len(b"@2A MOVE 3*XXXX\n")
    assert line == b"@2A MOVE 3*%04X\n" % crc16(b"@2A MOVE 3")
    msg = decode(line)
    assert (msg.kind, msg.seq, msg.tokens) == ("@", 0x2A, ("MOVE", "3"))


def test_ok_and_error_replies_round_trip():
    ok = decode_reply(encode_reply(7, {"pos": 2, "eng": 1}))
    assert ok.ok and ok.seq == 7 and ok.fields == {"pos": "2", "eng": "1"}
    err = decode_reply(encode_reply(8, {"max": 3}, error=ERROR_BY_NAME["RANGE"]))
    assert not err.ok and (err.error_code, err.error_name, err.fields) == (5, "RANGE", {"max": "3"})


@pytest.mark.parametrize("line, match", [
    (b"hello", "does not start"),
    (b"@01 STAT", "missing"),
    (b"@01 STAT*ZZZZ", "not four upper-case hex"),
    (b"@01 STAT*1aa1", "not four upper-case hex"),
    (b"@01 STAT*0000", "CRC mismatch"),
])
def test_malformed_lines_raise_frame_error(line, match):
    with pytest.raises(FrameError, match=match):
        decode(line)


def test_crc_valid_but_malformed_frames_are_flagged_crc_ok():
    body = b"#05 MAYBE x"
    with pytest.raises(FrameError, match="OK or ERR") as info:
        decode_reply(body + b"*%04X" % crc16(body))
    assert info.value.crc_ok and info.value.seq == 5
    with pytest.raises(FrameError, match="expected a reply"):
        decode_reply(encode_request(1, "STAT"))


def test_bad_tokens_and_sequence_numbers_are_rejected_when_encoding():
    with pytest.raises(ValueError):
        encode_request(256, "STAT")
    with pytest.raises(ValueError):
        encode_request(1, "MOVE", "1 2")
    with pytest.raises(ValueError):
        encode_reply(1, {"id": "a*b"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_random_bytes_never_crash_the_parser(data):
    try:
        decode_reply(data)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.sampled_from(["ID", "STAT", "MOVE 3", "HOME"]), st.data())
def test_any_single_byte_corruption_is_detected(seq, command, data):
    line = bytearray(encode_request(seq, *command.split()).rstrip(b"\n"))
    i = data.draw(st.integers(0, len(line) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != line[i]))
    line[i] = new
    with pytest.raises(FrameError):
        decode(bytes(line))
