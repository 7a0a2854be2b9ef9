"""Stdout sink: one JSON record per line."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import BinaryIO

from base.schema import Section
from edge.sinks.base import Sink, SinkError


@dataclass(frozen=True)
class StdoutSinkConfig(Section):
    """`{type: stdout}`: no options."""

    type: str


class StdoutSink(Sink):
    """Writes JSON lines to a binary stream (stdout by default), flushed line by line.

    When the reader goes away (EPIPE, e.g. `keycam run ... | head -1`) the sink stops: it is marked
    dead, every further record is counted as lost, and stdout is pointed at /dev/null so that Python's
    final flush at exit neither raises nor prints a traceback (the usual SIGPIPE convention)."""

    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None):
        super().__init__()
        self.stream = stream if stream is not None else sys.stdout.buffer

    @classmethod
    def from_config(cls, cfg: StdoutSinkConfig) -> StdoutSink:
        """A sink writing to this process's stdout."""
        return cls()

    def _send(self, payload: bytes) -> None:
        try:
            self.stream.write(payload)
            self.stream.flush()
        except BrokenPipeError as exc:
            self._count(lost=1)
            self._reader_gone()
            raise SinkError(f"stdout sink: reader closed the pipe, stopping ({exc})") from exc
        except (OSError, ValueError) as exc:  # closed stream
            self._count(lost=1)
            raise SinkError(f"stdout sink: cannot write: {exc}") from exc
        self._count(sent=1)

    def _reader_gone(self) -> None:
        self.dead = True
        if self.stream is sys.stdout.buffer:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    def flush(self, timeout: float = 5.0) -> bool:
        if self.dead:
            return False
        try:
            self.stream.flush()
        except (OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        self.flush()
