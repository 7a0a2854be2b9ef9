"""Stdout sink: one JSON record per line."""
from __future__ import annotations

import sys
from typing import BinaryIO

from edge.sinks.base import Sink, SinkError


class StdoutSink(Sink):
    """Writes JSON lines to a binary stream (stdout by default), flushed line by line."""

    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None):
        super().__init__()
        self.stream = stream if stream is not None else sys.stdout.buffer

    def _send(self, payload: bytes) -> None:
        try:
            self.stream.write(payload)
            self.stream.flush()
        except (OSError, ValueError) as exc:  # closed pipe or stream
            self._count(lost=1)
            raise SinkError(f"stdout sink: cannot write: {exc}") from exc
        self._count(sent=1)

    def flush(self, timeout: float = 5.0) -> bool:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            return False
        return True

    def close(self) -> None:
        self.flush()
