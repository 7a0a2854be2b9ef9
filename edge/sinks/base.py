"""Sink interface: where guard-checked records go. A sink refuses anything that is not a GuardedRecord."""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod

from edge.egress import EgressRefused, GuardedRecord
from edge.errors import KeycamError


class SinkError(KeycamError):
    """A sink cannot be opened or written."""


class Sink(ABC):
    """One output channel. `send` takes GuardedRecords only; `lost` counts records it had to give up."""

    name = "sink"

    def __init__(self) -> None:
        self._count_lock = threading.Lock()
        self.sent = 0
        self.lost = 0

    def send(self, record: GuardedRecord) -> None:
        """Queue or write one record (refuses anything the egress guard did not produce)."""
        if not isinstance(record, GuardedRecord):
            raise EgressRefused(f"{self.name} sink: only guard-checked records may leave, "
                                f"got {type(record).__name__}")
        self._send(record.payload)

    @abstractmethod
    def _send(self, payload: bytes) -> None:
        """Write one encoded JSON line."""

    def flush(self, timeout: float = 5.0) -> bool:
        """Push out whatever is buffered; True when nothing is left pending."""
        return True

    def close(self) -> None:
        """Flush and release the channel."""

    def _count(self, sent: int = 0, lost: int = 0) -> None:
        with self._count_lock:
            self.sent += sent
            self.lost += lost

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "lost": self.lost}
