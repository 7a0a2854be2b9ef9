"""Sink interface: where guard-checked records go. A sink refuses anything that is not a GuardedRecord."""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

from base.errors import KeycamError
from edge.egress import EgressRefused, GuardedRecord

log = logging.getLogger("keycam.sinks")


class SinkError(KeycamError):
    """A sink cannot be opened or written."""


class Sink(ABC):
    """One output channel. `send` takes GuardedRecords only; `lost` counts records it had to give up.

    A failed write is counted in `lost` and logged once (the first failure); `report_loss` logs the
    total when the sink closes. A sink whose channel is gone for good (`dead`, e.g. a closed pipe)
    counts every further record as lost without trying to write it.
    """

    name = "sink"

    def __init__(self) -> None:
        self._count_lock = threading.Lock()
        self.sent = 0
        self.lost = 0
        self.dead = False
        self._failures = 0

    def send(self, record: GuardedRecord) -> None:
        """Queue or write one record (refuses anything the egress guard did not produce).

        Delivery failures do not raise: they are counted in `lost`, and only the first is logged."""
        if not isinstance(record, GuardedRecord):
            raise EgressRefused(f"{self.name} sink: only guard-checked records may leave, "
                                f"got {type(record).__name__}")
        if self.dead:
            self._count(lost=1)
            return
        try:
            self._send(record.payload)
        except SinkError as exc:
            self._failures += 1
            if self._failures == 1:
                log.warning("%s (further failures are counted, not logged)", exc)

    def report_loss(self) -> None:
        """Log how many records this sink did not deliver (nothing when none were lost)."""
        if self.lost:
            log.warning("%s sink: %d record(s) not delivered (%d delivered)", self.name, self.lost, self.sent)

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
