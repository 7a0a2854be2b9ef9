"""Record sinks: stdout, serial, MQTT, and a counting discard sink for benchmarks."""
from __future__ import annotations

from edge.sinks.base import Sink, SinkError


class DiscardSink(Sink):
    """Counts and drops records (benchmarks measure the guard and pipeline without I/O)."""

    name = "discard"

    def _send(self, payload: bytes) -> None:
        self._count(sent=1)


def make_sink(spec: dict) -> Sink:
    """Build one sink from a validated config entry ({'type': 'stdout'|'serial'|'mqtt'|'discard', ...})."""
    options = {k: v for k, v in spec.items() if k != "type"}
    kind = spec["type"]
    if kind == "stdout":
        from edge.sinks.stdout import StdoutSink
        return StdoutSink()
    if kind == "serial":
        from edge.sinks.serial import SerialSink
        return SerialSink(**options)
    if kind == "mqtt":
        from edge.sinks.mqtt import MqttSink
        return MqttSink(**options)
    if kind == "discard":
        return DiscardSink()
    raise SinkError(f"unknown sink type {kind!r}")


__all__ = ["DiscardSink", "Sink", "SinkError", "make_sink"]
