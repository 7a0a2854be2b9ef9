"""Record sinks: stdout, serial, MQTT, and a counting discard sink for benchmarks, each with its
config class, built from a device config's `sinks:` entries through one registry."""
from __future__ import annotations

from dataclasses import dataclass

from base.schema import Registry, Section
from edge.sinks.base import Sink, SinkError
from edge.sinks.mqtt import MqttSink, MqttSinkConfig
from edge.sinks.serial import SerialSink, SerialSinkConfig
from edge.sinks.stdout import StdoutSink, StdoutSinkConfig


@dataclass(frozen=True)
class DiscardSinkConfig(Section):
    """`{type: discard}`: no options."""

    type: str


class DiscardSink(Sink):
    """Counts and drops records (benchmarks measure the guard and pipeline without I/O)."""

    name = "discard"

    def _send(self, payload: bytes) -> None:
        self._count(sent=1)


SINKS: Registry[Sink] = Registry("sink")
SINKS.register("stdout", StdoutSinkConfig, StdoutSink.from_config)
SINKS.register("serial", SerialSinkConfig, SerialSink.from_config)
SINKS.register("mqtt", MqttSinkConfig, MqttSink.from_config)
SINKS.register("discard", DiscardSinkConfig, lambda cfg: DiscardSink())
SinkConfig = StdoutSinkConfig | SerialSinkConfig | MqttSinkConfig | DiscardSinkConfig


def make_sink(config: SinkConfig) -> Sink:
    """Build the sink a validated `sinks:` entry describes (see SINKS.parse)."""
    return SINKS.build(config)


__all__ = ["SINKS", "DiscardSink", "DiscardSinkConfig", "MqttSinkConfig", "SerialSinkConfig", "Sink", "SinkConfig",
           "SinkError", "StdoutSinkConfig", "make_sink"]
