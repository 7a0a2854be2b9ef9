"""Serial sink: JSON lines over a UART (pyserial), e.g. to a host or a radio module."""
from __future__ import annotations

import termios
from dataclasses import dataclass

from base.schema import POSITIVE, Section, setting
from edge.sinks.base import Sink, SinkError


@dataclass(frozen=True, kw_only=True)
class SerialSinkConfig(Section):
    """`{type: serial, port: ...}`: JSON lines over a UART."""

    type: str
    port: str
    baudrate: int = setting(115200, rule=POSITIVE)
    write_timeout: float = setting(1.0, rule=POSITIVE)


class SerialSink(Sink):
    """Writes JSON lines to a serial port; a failed write is counted as lost and reported."""

    name = "serial"

    def __init__(self, port: str, baudrate: int = 115200, write_timeout: float = 1.0):
        super().__init__()
        import serial  # pyserial, part of the device extra
        try:
            self.port = serial.serial_for_url(port, baudrate=baudrate, write_timeout=write_timeout)
        except (serial.SerialException, ValueError) as exc:
            raise SinkError(f"serial sink: cannot open {port!r}: {exc}") from exc
        self._serial_error = serial.SerialException

    @classmethod
    def from_config(cls, cfg: SerialSinkConfig) -> SerialSink:
        """The sink a validated serial sink entry describes."""
        return cls(cfg.port, baudrate=cfg.baudrate, write_timeout=cfg.write_timeout)

    def _send(self, payload: bytes) -> None:
        try:
            written = self.port.write(payload)
        except (self._serial_error, OSError) as exc:
            self._count(lost=1)
            raise SinkError(f"serial sink: write failed: {exc}") from exc
        if written != len(payload):
            self._count(lost=1)
            raise SinkError(f"serial sink: wrote {written} of {len(payload)} bytes (write timeout)")
        self._count(sent=1)

    def flush(self, timeout: float = 5.0) -> bool:
        try:
            self.port.flush()
        except (self._serial_error, OSError, termios.error):    # tcdrain on a port whose far end is gone
            return False
        return True

    def close(self) -> None:
        self.flush()
        self.port.close()
