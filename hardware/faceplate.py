"""Host driver for the faceplate actuator: the line protocol of hardware/PROTOCOL.md over pyserial.

Every request has a timeout and bounded retries with exponential backoff; replies are matched by
sequence number, CRC-checked and resynchronised after garbage; every failure is a FaceplateError
subclass saying what went wrong and what to check.
"""
from __future__ import annotations

import random
import termios
import time
from collections import Counter

from hardware.errors import (
    FaceplateCommandError,
    FaceplateDisconnected,
    FaceplateError,
    FaceplateMismatch,
    FaceplateMotorError,
    FaceplateProtocolError,
    FaceplateTimeout,
)
from hardware.faceplate_state import FaceplateIdentity, FaceplateStatus
from hardware.protocol import ERROR_CODES, MAX_LINE, RETRYABLE_ERRORS, FrameError, Reply, decode_reply, encode_request

__all__ = ["SerialFaceplate"]


def _serial():
    try:
        import serial
    except ImportError as exc:
        raise FaceplateError("pyserial is not installed: pip install 'keycam[device]'") from exc
    return serial


class SerialFaceplate:
    """One faceplate actuator on a serial port (a device path or any pyserial URL)."""

    def __init__(self, port: str, baudrate: int = 115200, timeout: float = 0.5, retries: int = 3,
                 backoff: float = 0.05, move_timeout: float = 10.0, poll_interval: float = 0.02):
        if timeout <= 0 or retries < 0 or backoff < 0 or move_timeout <= 0 or poll_interval <= 0:
            raise FaceplateError("faceplate timeouts must be > 0 and retries/backoff >= 0")
        serial = _serial()
        self.port = port
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.move_timeout, self.poll_interval = move_timeout, poll_interval
        self.stats: Counter = Counter()
        self._seq = random.randrange(256)
        self._pending = b""
        try:
            self._ser = serial.serial_for_url(port, baudrate=baudrate, timeout=timeout, write_timeout=timeout)
            self._ser.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise FaceplateError(f"cannot open faceplate serial port {port}: {exc}") from exc

    # -- link ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the serial port (idempotent)."""
        try:
            self._ser.close()
        except Exception:   # noqa: BLE001 - the link may already be gone; closing must not fail
            pass

    def __enter__(self) -> SerialFaceplate:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _disconnected(self, exc: BaseException) -> FaceplateDisconnected:
        return FaceplateDisconnected(f"faceplate actuator on {self.port} disconnected: {exc}. "
                                     "Check the cable and power, then reconnect")

    def _read_reply(self, seq: int, deadline: float) -> tuple[Reply | None, str]:
        """Read lines until a valid reply with sequence number `seq` or the deadline."""
        serial = _serial()
        problem = "timeout"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, problem
            self._ser.timeout = remaining
            try:
                chunk = self._ser.read_until(b"\n", 2 * MAX_LINE)
            except (serial.SerialException, OSError) as exc:
                raise self._disconnected(exc) from exc
            self._pending += chunk
            if not self._pending.endswith(b"\n"):
                self._pending = self._pending[-2 * MAX_LINE:]
                continue
            line, self._pending = self._pending, b""
            start = line.rfind(b"#")
            if start < 0:
                self.stats["garbage"] += 1
                continue
            try:
                reply = decode_reply(line[start:])
            except FrameError as exc:
                self.stats["corrupt"] += 1
                problem = f"corrupt reply ({exc})"
                continue
            if reply.seq != seq:
                self.stats["stale"] += 1
                continue
            return reply, ""

    def request(self, command: str, *args: object) -> Reply:
        """Send one command and return its OK reply; retries timeouts and corrupt replies."""
        serial = _serial()
        self._seq = (self._seq + 1) % 256
        seq = self._seq
        frame = b"\n" + encode_request(seq, command, *args)   # leading newline ends any partial junk
        problems: list[str] = []
        self.stats["requests"] += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                self._ser.write(frame)
                self._ser.flush()
            except (serial.SerialException, OSError, termios.error) as exc:   # tcdrain's EIO is a termios.error
                raise self._disconnected(exc) from exc
            reply, problem = self._read_reply(seq, time.monotonic() + self.timeout)
            if reply is None:
                problems.append(problem)
                continue
            if reply.ok:
                return reply
            if reply.error_code in RETRYABLE_ERRORS:
                problems.append(f"actuator reported {reply.error_name} for the request")
                continue
            meaning = ERROR_CODES.get(reply.error_code, ("", "unknown error"))[1]
            detail = " ".join(f"{k}={v}" for k, v in reply.fields.items())
            raise FaceplateCommandError(
                f"faceplate actuator refused {command}{''.join(' ' + str(a) for a in args)}: "
                f"{reply.error_name} ({meaning}){' ' + detail if detail else ''}",
                reply.error_code, reply.error_name)
        attempts = self.retries + 1
        if all(p == "timeout" for p in problems):
            raise FaceplateTimeout(f"no reply from the faceplate actuator on {self.port} to {command} after "
                                   f"{attempts} attempts of {self.timeout}s: check port, cable, power and baud rate")
        summary = "; ".join(f"{n}x {p}" for p, n in Counter(problems).items())
        raise FaceplateProtocolError(f"no valid reply from the faceplate actuator on {self.port} to {command} "
                                     f"after {attempts} attempts: {summary}")

    # -- commands -----------------------------------------------------------------------------
    def identify(self) -> FaceplateIdentity:
        """Actuator unit id, firmware version, number of slots and the faceplate in the light path."""
        return FaceplateIdentity.from_fields(self.request("ID").fields)

    def status(self) -> FaceplateStatus:
        """Current state: faceplate id, firmware, position, engaged, moving, homed, error."""
        return FaceplateStatus.from_fields(self.request("STAT").fields)

    def home(self, wait: bool = True) -> FaceplateStatus:
        """Drive to the home switch (position 0); with wait, block until done or fail."""
        state = FaceplateStatus.from_fields(self.request("HOME").fields)
        return self._wait_motion(0) if wait else state

    def move(self, position: int, wait: bool = True) -> FaceplateStatus:
        """Move the turret to slot `position`; with wait, block until there or fail."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise FaceplateError(f"faceplate position must be a non-negative integer, got {position!r}")
        state = FaceplateStatus.from_fields(self.request("MOVE", position).fields)
        return self._wait_motion(position) if wait else state

    def engage(self) -> FaceplateStatus:
        """Clamp the faceplate at the current slot into the optical path."""
        return FaceplateStatus.from_fields(self.request("ENGAGE").fields)

    def disengage(self) -> FaceplateStatus:
        """Release the clamp so the turret can move."""
        return FaceplateStatus.from_fields(self.request("DISENGAGE").fields)

    def verify(self, expected_id: str, position: int | None = None) -> FaceplateStatus:
        """Fail closed unless faceplate `expected_id` is engaged (at `position`, if given) without fault."""
        state = self.status()
        problems = state.problems(expected_id, position)
        if problems:
            raise FaceplateMismatch("faceplate check failed, refusing to capture: "
                                    + "; ".join(p.message for p in problems))
        return state

    def _wait_motion(self, target: int) -> FaceplateStatus:
        deadline = time.monotonic() + self.move_timeout
        while True:
            state = self.status()
            if state.error:
                raise FaceplateMotorError(
                    f"faceplate motor reported {state.error} moving to position {target} "
                    f"(now at {state.position}): check the turret for obstructions, then home it")
            if not state.moving:
                if state.position != target:
                    raise FaceplateMotorError(f"faceplate motor stopped at position {state.position}, "
                                              f"not at target {target}")
                return state
            if time.monotonic() >= deadline:
                raise FaceplateTimeout(f"faceplate motor did not reach position {target} within "
                                       f"{self.move_timeout}s (still moving)")
            time.sleep(self.poll_interval)
