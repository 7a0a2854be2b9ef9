"""Metrics: latency windows, rate, Prometheus text and the 127.0.0.1 endpoint."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from base.errors import ConfigError
from edge.metrics import LatencyWindow, Metrics, MetricsServer, RateMeter


def test_latency_window_is_bounded_and_reports_recent_quantiles():
    w = LatencyWindow(size=100)
    for i in range(1000):
        w.add(1.0 if i < 900 else 0.001)
    assert w.count == 1000 and w.quantiles() == pytest.approx([0.001, 0.001])
    assert w.total == pytest.approx(900 + 0.1)
    assert LatencyWindow().quantiles() == [0.0, 0.0]


def test_rate_meter():
    r = RateMeter(size=10)
    for i in range(50):
        r.tick(i * 0.01)
    assert r.rate() == pytest.approx(100.0)


def test_prometheus_text_has_stages_drops_and_fingerprints():
    m = Metrics()
    m.info = {"model_id": "demo", "key_fingerprint": "a" * 64, "sensor_fingerprint": "b" * 64}
    for stage in ("capture", "key", "infer", "egress"):
        m.observe(stage, 0.002)
    m.frame_done()
    m.drop("capture_queue_full", 3)
    m.sink_stats = lambda: {"mqtt": {"sent": 5, "lost": 2}}
    text = m.prometheus()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert 'keycam_dropped_frames_total{reason="capture_queue_full"} 3' in lines
    assert "keycam_frames_total 1" in lines
    for stage in ("capture", "key", "infer", "egress"):
        assert f'keycam_stage_latency_seconds{{stage="{stage}",quantile="0.99"}} 0.002' in lines
        assert f'keycam_stage_latency_seconds_count{{stage="{stage}"}} 1' in lines
    assert f'keycam_model_info{{model_id="demo",key_fingerprint="{"a" * 64}",sensor_fingerprint="{"b" * 64}"}} 1' in lines
    assert 'keycam_sink_lost_total{sink="mqtt"} 2' in lines
    for line in lines:                       # every sample line is "name{labels} number"
        name, value = line.rsplit(" ", 1)
        float(value)
        assert name.startswith("keycam_")
    assert m.snapshot()["sink_lost"] == 2 and m.dropped_total == 3


def test_endpoint_serves_metrics_on_localhost_only():
    m = Metrics()
    server = MetricsServer(m, 0)
    try:
        assert server.httpd.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            assert resp.status == 200 and "text/plain" in resp.headers["Content-Type"]
            assert "keycam_frames_total 0" in resp.read().decode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
    finally:
        server.close()


def test_busy_port_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="metrics: cannot listen on 127.0.0.1"):
            MetricsServer(Metrics(), s.getsockname()[1])
