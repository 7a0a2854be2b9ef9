"""Wire format of the faceplate actuator line protocol (see hardware/PROTOCOL.md).

Request:  ``@SS CMD [ARG ...]*CCCC\\n``            (host -> actuator)
Reply:    ``#SS OK [key=value ...]*CCCC\\n``       (actuator -> host)
          ``#SS ERR CODE NAME [key=value ...]*CCCC\\n``
SS is a two-digit hex sequence number, CCCC the CRC-16/CCITT-FALSE of every byte from the
start character up to (not including) ``*``, as four upper-case hex digits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINE = 120
REQUEST_START = b"@"
REPLY_START = b"#"
# the command set: command -> number of arguments it takes
COMMAND_ARGS: dict[str, int] = {"ID": 0, "HOME": 0, "MOVE": 1, "STAT": 0, "ENGAGE": 0, "DISENGAGE": 0}
# commands that change the actuator's state: a retransmission of one runs once (PROTOCOL.md, Reliability)
MUTATING_COMMANDS = frozenset({"HOME", "MOVE", "ENGAGE", "DISENGAGE"})
EMPTY_SLOT = "-"             # the `id` field while no faceplate is known to be in the light path

# error code -> (name, meaning); shared by the firmware emulator and the host driver
ERROR_CODES: dict[int, tuple[str, str]] = {
    1: ("CRC", "request CRC mismatch"),
    2: ("FRAME", "malformed request line"),
    3: ("UNKNOWN", "unknown command"),
    4: ("ARG", "wrong number or type of arguments"),
    5: ("RANGE", "position out of range"),
    6: ("NOT_HOMED", "home the actuator before moving"),
    7: ("BUSY", "the motor is moving"),
    8: ("ENGAGED", "disengage the faceplate before moving"),
    9: ("STALL", "the motor stalled before reaching its target"),
    10: ("NO_FACEPLATE", "no faceplate is fitted at this position"),
}
ERROR_BY_NAME = {name: code for code, (name, _) in ERROR_CODES.items()}
RETRYABLE_ERRORS = frozenset({ERROR_BY_NAME["CRC"], ERROR_BY_NAME["FRAME"]})

_TOKEN = re.compile(rb"^[\x21-\x7e]+$")
_HEX2 = re.compile(rb"^[0-9A-F]{2}$")
_HEX4 = re.compile(rb"^[0-9A-F]{4}$")


class FrameError(ValueError):
    """A line is not a valid protocol frame; `seq` is set when the sequence number was readable."""

    def __init__(self, message: str, seq: int | None = None, crc_ok: bool = False):
        super().__init__(message)
        self.seq = seq
        self.crc_ok = crc_ok


@dataclass(frozen=True)
class Message:
    """One decoded frame: kind is '@' (request) or '#' (reply); tokens after the sequence number."""

    kind: str
    seq: int
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class Reply:
    """A decoded reply: ok with key=value fields, or an error code with its name and fields."""

    seq: int
    ok: bool
    fields: dict[str, str] = field(default_factory=dict)
    error_code: int = 0
    error_name: str = ""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _frame(start: bytes, seq: int, tokens: list[str]) -> bytes:
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number {seq} outside 0..255")
    for tok in tokens:
        if not _TOKEN.match(tok.encode("ascii", "replace")) or any(c in tok for c in "*@#"):
            raise ValueError(f"token {tok!r} must be printable ASCII without spaces, '*', '@' or '#'")
    body = start + f"{seq:02X} ".encode() + " ".join(tokens).encode("ascii")
    line = body + f"*{crc16(body):04X}\n".encode()
    if len(line) > MAX_LINE:
        raise ValueError(f"frame of {len(line)} bytes exceeds {MAX_LINE}")
    return line


def encode_request(seq: int, command: str, *args: object) -> bytes:
    """Build one request line, e.g. encode_request(5, 'MOVE', 3) == b'@05 MOVE 3*XXXX\\n'."""
    return _frame(REQUEST_START, seq, [command, *map(str, args)])


def encode_reply(seq: int, fields: dict[str, object] | None = None, error: int | None = None) -> bytes:
    """Build one reply line: OK with fields, or ERR with an error code (see ERROR_CODES)."""
    pairs = [f"{k}={v}" for k, v in (fields or {}).items()]
    if error is None:
        return _frame(REPLY_START, seq, ["OK", *pairs])
    return _frame(REPLY_START, seq, ["ERR", str(error), ERROR_CODES[error][0], *pairs])


def decode(line: bytes) -> Message:
    """Parse and CRC-check one line (with or without its newline); raise FrameError if invalid."""
    line = line.rstrip(b"\r\n")
    if len(line) < 4 or line[:1] not in (REQUEST_START, REPLY_START):
        raise FrameError(f"line does not start with '@' or '#': {line[:24]!r}")
    seq = int(line[1:3], 16) if _HEX2.match(line[1:3]) else None
    body, star, crc_text = line.rpartition(b"*")
    if not star or len(crc_text) != 4:
        raise FrameError("missing '*CCCC' CRC trailer", seq)
    if not _HEX4.match(crc_text):
        raise FrameError(f"CRC {crc_text!r} is not four upper-case hex digits", seq)
    crc = int(crc_text, 16)
    if crc != crc16(body):
        raise FrameError(f"CRC mismatch (got {crc:04X}, computed {crc16(body):04X})", seq)
    if seq is None or body[3:4] != b" ":
        raise FrameError("sequence number must be two hex digits followed by a space", seq, crc_ok=True)
    try:
        text = body[4:].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("non-ASCII bytes in frame", seq, crc_ok=True) from None
    tokens = tuple(text.split())
    if not tokens:
        raise FrameError("empty frame", seq, crc_ok=True)
    return Message(kind=line[:1].decode(), seq=seq, tokens=tokens)


def decode_reply(line: bytes) -> Reply:
    """Parse one reply line into a Reply; raise FrameError if it is not a well-formed reply."""
    msg = decode(line)
    if msg.kind != "#":
        raise FrameError("expected a reply ('#'), got a request", msg.seq, crc_ok=True)
    status, rest = msg.tokens[0], list(msg.tokens[1:])
    code, name = 0, ""
    if status == "ERR":
        if len(rest) < 2 or not rest[0].isdigit():
            raise FrameError("ERR reply without a numeric code and a name", msg.seq, crc_ok=True)
        code, name, rest = int(rest[0]), rest[1], rest[2:]
    elif status != "OK":
        raise FrameError(f"reply status must be OK or ERR, got {status!r}", msg.seq, crc_ok=True)
    fields = {}
    for tok in rest:
        key, eq, value = tok.partition("=")
        if not eq or not key:
            raise FrameError(f"reply field {tok!r} is not key=value", msg.seq, crc_ok=True)
        fields[key] = value
    return Reply(seq=msg.seq, ok=status == "OK", fields=fields, error_code=code, error_name=name)
