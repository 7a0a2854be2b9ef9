"""The faceplate actuator firmware as a pure state machine (no I/O), used by the emulator.

A turret holds `len(faceplates)` slots; each slot carries a fiber-bundle faceplate (its id) or is
empty. The motor moves one slot per `step_time` seconds; a stuck motor makes no progress and the
firmware latches a STALL error after `stall_timeout` seconds, like real stall detection.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hardware.protocol import COMMAND_ARGS, EMPTY_SLOT, ERROR_BY_NAME, MUTATING_COMMANDS, FrameError, decode, encode_reply


@dataclass
class FirmwareConfig:
    """Static description of one emulated actuator."""

    faceplates: list[str] = field(default_factory=lambda: ["FP-0001", "FP-0002", "FP-0003", EMPTY_SLOT])
    unit: str = "ACT-EMU-01"
    firmware: str = "1.2.0"
    step_time: float = 0.02
    stall_timeout: float = 0.3
    start_slot: int | None = None  # physical slot at power-up (default: the last one)
    stuck: bool = False
    dedupe_window: float = 2.0     # a repeated (seq, request) within this many seconds is a retransmission

    def __post_init__(self) -> None:
        if not self.faceplates:
            raise ValueError("the turret needs at least one slot")
        if self.start_slot is None:
            self.start_slot = len(self.faceplates) - 1
        if not 0 <= self.start_slot < len(self.faceplates):
            raise ValueError(f"start slot {self.start_slot} outside 0..{len(self.faceplates) - 1}")
        if self.step_time <= 0 or self.stall_timeout <= 0:
            raise ValueError("step_time and stall_timeout must be positive")


class Firmware:
    """Executes protocol requests; `handle(line, now)` returns the reply line or None."""

    def __init__(self, config: FirmwareConfig):
        self.cfg = config
        self.slot = config.start_slot          # physical slot, known to the host only after HOME
        self.homed = False
        self.engaged = False
        self.moving = False
        self.error = 0
        self._from = self._target = self.slot
        self._since = 0.0
        self._homing = False
        self._last: tuple[int, tuple[str, ...], bytes, float] | None = None

    # -- motion -------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Advance the motor model to time `now` (seconds, monotonic)."""
        if not self.moving:
            return
        elapsed = now - self._since
        if self.cfg.stuck:
            if elapsed >= self.cfg.stall_timeout:
                self.moving, self.error = False, ERROR_BY_NAME["STALL"]
            return
        distance = abs(self._target - self._from)
        steps = min(int(elapsed / self.cfg.step_time), distance)
        self.slot = self._from + steps * (1 if self._target >= self._from else -1)
        if steps == distance:
            self.moving = False
            if self._homing:
                self.homed, self._homing = True, False

    def _start(self, target: int, now: float, homing: bool) -> None:
        self._from, self._target, self._since = self.slot, target, now
        self.moving, self._homing, self.error = True, homing, 0
        self.tick(now)

    # -- requests -----------------------------------------------------------------------------
    def status_fields(self) -> dict[str, object]:
        """The STAT reply fields."""
        return {"id": self.faceplate_id(), "fw": self.cfg.firmware, "pos": self.slot if self.homed else -1,
                "eng": int(self.engaged), "mov": int(self.moving), "homed": int(self.homed), "err": self.error}

    def faceplate_id(self) -> str:
        """Id of the faceplate in the optical path, EMPTY_SLOT while unknown (moving, not homed, empty slot)."""
        if self.moving or not self.homed:
            return EMPTY_SLOT
        return self.cfg.faceplates[self.slot]

    def handle(self, line: bytes, now: float) -> bytes | None:
        """Execute one request line and return its reply (None for unaddressable garbage)."""
        self.tick(now)
        start = line.rfind(b"@")
        if start < 0:
            return None                                   # line noise: nothing to answer
        try:
            msg = decode(line[start:])
        except FrameError as exc:
            if exc.seq is None:
                return None
            return encode_reply(exc.seq, error=ERROR_BY_NAME["FRAME" if exc.crc_ok else "CRC"])
        if msg.kind != "@":
            return encode_reply(msg.seq, error=ERROR_BY_NAME["FRAME"])
        command = msg.tokens[0]
        last = self._last
        if (command in MUTATING_COMMANDS and last and last[:2] == (msg.seq, msg.tokens)
                and now - last[3] <= self.cfg.dedupe_window):
            return last[2]                                # retransmission: answer again, run once
        reply = self._execute(msg.seq, command, msg.tokens[1:], now)
        if command in MUTATING_COMMANDS:
            self._last = (msg.seq, msg.tokens, reply, now)
        return reply

    def _execute(self, seq: int, command: str, args: tuple[str, ...], now: float) -> bytes:
        def err(name: str, **fields: object) -> bytes:
            return encode_reply(seq, fields or None, error=ERROR_BY_NAME[name])

        if command not in COMMAND_ARGS:
            return err("UNKNOWN")
        if len(args) != COMMAND_ARGS[command]:
            return err("ARG")
        if command == "ID":
            return encode_reply(seq, {"unit": self.cfg.unit, "fw": self.cfg.firmware,
                                      "slots": len(self.cfg.faceplates), "id": self.faceplate_id()})
        if command == "STAT":
            return encode_reply(seq, self.status_fields())
        if command == "DISENGAGE":
            self.engaged = False
            return encode_reply(seq, self.status_fields())
        if self.moving:
            return err("BUSY")
        if command == "ENGAGE":
            if not self.homed:
                return err("NOT_HOMED")
            if self.error:
                return err("STALL")
            if self.cfg.faceplates[self.slot] == EMPTY_SLOT:
                return err("NO_FACEPLATE", pos=self.slot)
            self.engaged = True
            return encode_reply(seq, self.status_fields())
        if self.engaged:
            return err("ENGAGED")
        if command == "HOME":
            self._start(0, now, homing=True)
            return encode_reply(seq, self.status_fields())
        if not args[0].lstrip("-").isdigit():
            return err("ARG")
        target = int(args[0])
        if not 0 <= target < len(self.cfg.faceplates):
            return err("RANGE", max=len(self.cfg.faceplates) - 1)
        if not self.homed:
            return err("NOT_HOMED")
        self._start(target, now, homing=False)
        return encode_reply(seq, self.status_fields())
