"""MQTT sink against a real mosquitto broker on 127.0.0.1 that the tests stop and restart."""
from __future__ import annotations

import signal

import pytest

from edge.egress import EgressRefused
from edge.sinks.mqtt import MqttSink
from tests.kits.edge import TOPIC, Subscriber, guard, top_k_record, wait_until


@pytest.fixture
def subscriber(broker):
    sub = Subscriber(broker.port)
    yield sub
    sub.close()


def _sink(port: int, buffer: int) -> MqttSink:
    sink = MqttSink("127.0.0.1", port, TOPIC, buffer=buffer, reconnect_min_s=1, reconnect_max_s=1)
    assert sink.wait_connected(10), "sink did not connect"
    return sink


@pytest.mark.timeout(90)
def test_nothing_lost_across_broker_restart(broker, subscriber):
    g, sink = guard(), _sink(broker.port, buffer=500)
    try:
        for seq in range(50):
            sink.send(g.check(top_k_record(seq)))
        assert wait_until(lambda: len(subscriber.unique()) == 50, 15)

        broker.stop(signal.SIGTERM)
        assert wait_until(lambda: not sink.connected, 10)
        for seq in range(50, 250):   # broker is down: these wait in the local buffer
            sink.send(g.check(top_k_record(seq)))
        assert sink.pending >= 200 and sink.lost == 0

        broker.start()
        assert wait_until(lambda: subscriber.unique() == set(range(250)), 30), \
            f"missing {sorted(set(range(250)) - subscriber.unique())[:20]}"
        assert sink.flush(10) and sink.pending == 0
        assert sink.lost == 0 and sink.sent == 250 and sink.reconnects >= 1
    finally:
        sink.close()


@pytest.mark.timeout(90)
def test_losses_beyond_buffer_are_counted(broker, subscriber, caplog):
    g, sink = guard(), _sink(broker.port, buffer=20)
    try:
        broker.stop(signal.SIGTERM)
        assert wait_until(lambda: not sink.connected, 10)
        for seq in range(50):
            sink.send(g.check(top_k_record(seq)))
        assert sink.lost == 30 and sink.pending == 20
        warnings = [r.getMessage() for r in caplog.records if r.name == "keycam.sinks"]
        assert len(warnings) == 1 and "buffer full" in warnings[0]      # once, not 30 times
        broker.start()
        assert wait_until(lambda: len(subscriber.unique()) == 20, 30)
        assert subscriber.unique() == set(range(20))   # the first 20 were buffered, the rest counted
        assert sink.flush(10) and sink.stats()["lost"] == 30
    finally:
        sink.close()


def test_close_counts_unacknowledged_as_lost(broker, caplog):
    g, sink = guard(), _sink(broker.port, buffer=10)
    broker.stop(signal.SIGKILL)
    assert wait_until(lambda: not sink.connected, 10)
    for seq in range(4):
        sink.send(g.check(top_k_record(seq)))
    sink.close(timeout=0.2)
    assert sink.lost == 4 and sink.pending == 0
    sink.report_loss()
    assert "mqtt sink: 4 record(s) not delivered (0 delivered)" in caplog.text


def test_mqtt_sink_refuses_unguarded_payloads(broker):
    sink = _sink(broker.port, buffer=10)
    try:
        for raw in (b'{"type":"prediction"}', top_k_record(1), "text"):
            with pytest.raises(EgressRefused):
                sink.send(raw)
        assert sink.accepted == 0
    finally:
        sink.close()
