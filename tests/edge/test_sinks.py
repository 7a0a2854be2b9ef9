"""Stdout and serial sinks (serial over a real pty), and the sink factory."""
from __future__ import annotations

import io
import json
import os
import select
import tty

import pytest

from base.errors import ConfigError
from edge.egress import EgressRefused
from edge.sinks import SINKS, DiscardSink, SinkError, StdoutSinkConfig, make_sink
from edge.sinks.serial import SerialSink
from edge.sinks.stdout import StdoutSink
from tests.kits.edge import guard, top_k_record


def test_stdout_sink_writes_json_lines_and_refuses_raw_data():
    buf = io.BytesIO()
    sink, g = StdoutSink(buf), guard()
    for seq in range(3):
        sink.send(g.check(top_k_record(seq)))
    with pytest.raises(EgressRefused):
        sink.send(b"\x00" * 784)
    lines = buf.getvalue().decode().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [0, 1, 2] and sink.sent == 3


def test_stdout_sink_counts_a_broken_stream_and_warns_once(caplog):
    buf = io.BytesIO()
    buf.close()
    sink = StdoutSink(buf)
    g = guard()
    for seq in range(5):
        sink.send(g.check(top_k_record(seq)))       # failures are counted, not raised
    assert sink.lost == 5 and sink.sent == 0 and not sink.dead
    sink.report_loss()
    warnings = [r.getMessage() for r in caplog.records if r.name == "keycam.sinks"]
    assert len(warnings) == 2 and "cannot write" in warnings[0]
    assert warnings[1] == "stdout sink: 5 record(s) not delivered (0 delivered)"


def test_stdout_sink_stops_when_the_reader_closes_the_pipe():
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "wb")
    sink, g = StdoutSink(stream), guard()
    try:
        sink.send(g.check(top_k_record(0)))
        os.close(read_end)
        for seq in range(1, 50):
            sink.send(g.check(top_k_record(seq)))
        assert sink.dead and sink.sent == 1 and sink.lost == 49 and sink.flush() is False
    finally:
        sink.close()


def test_serial_sink_over_a_pty():
    master, slave = os.openpty()
    tty.setraw(master)
    sink = SerialSink(os.ttyname(slave))
    try:
        g = guard()
        for seq in range(5):
            sink.send(g.check(top_k_record(seq)))
        sink.flush()
        data = b""
        while data.count(b"\n") < 5 and select.select([master], [], [], 5)[0]:
            data += os.read(master, 4096)
        assert [json.loads(line)["seq"] for line in data.decode().splitlines()] == list(range(5))
        assert sink.sent == 5
    finally:
        sink.close()
        os.close(master)
        os.close(slave)


def test_serial_sink_bad_port_is_a_clear_error(tmp_path):
    with pytest.raises(SinkError, match="cannot open"):
        SerialSink(str(tmp_path / "no-such-tty"))


def test_sink_registry():
    assert isinstance(SINKS.create({"type": "discard"}, "sinks[0]"), DiscardSink)
    assert isinstance(make_sink(StdoutSinkConfig(type="stdout")), StdoutSink)
    with pytest.raises(ConfigError, match=r"sinks\[0\].type: unknown sink type 'carrier-pigeon'"):
        SINKS.create({"type": "carrier-pigeon"}, "sinks[0]")
    with pytest.raises(ConfigError, match="not a sink config"):
        make_sink({"type": "stdout"})                            # an unvalidated mapping is refused


def test_serial_sink_counts_writes_to_a_gone_port_and_warns_once(caplog):
    master, slave = os.openpty()
    sink = SerialSink(os.ttyname(slave))
    os.close(slave)
    os.close(master)                                  # the other end is gone: writes fail with EIO
    try:
        g = guard()
        for seq in range(20):
            sink.send(g.check(top_k_record(seq)))
        assert sink.lost == 20 and sink.sent == 0
        assert len([r for r in caplog.records if r.name == "keycam.sinks"]) == 1
    finally:
        sink.close()
