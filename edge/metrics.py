"""Service metrics: per-stage latency, fps, drops, alarms; Prometheus text on 127.0.0.1.

Memory is bounded: each stage keeps its last `window` latency samples in a fixed numpy ring, and
totals as counters. The HTTP endpoint binds 127.0.0.1 only (it is for a local scraper/agent) and
serves `GET /metrics`; it shows counters and hashes, never frame data.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from base.errors import ConfigError
from edge.egress import STAGES

QUANTILES = (0.5, 0.99)


class LatencyWindow:
    """The last `size` latency samples (seconds) of one stage plus running count and sum."""

    def __init__(self, size: int = 4096):
        self._buf = np.full(size, 0.0)   # written now, so its pages count from the start (flat RSS)
        self._size, self.count, self.total = size, 0, 0.0

    def add(self, seconds: float) -> None:
        self._buf[self.count % self._size] = seconds
        self.count += 1
        self.total += seconds

    def quantiles(self, qs: tuple[float, ...] = QUANTILES) -> list[float]:
        """Quantiles (seconds) of the samples in the window; zeros before the first sample."""
        n = min(self.count, self._size)
        if n == 0:
            return [0.0] * len(qs)
        return [float(v) for v in np.quantile(self._buf[:n], qs)]


class RateMeter:
    """Events per second over the last `size` events."""

    def __init__(self, size: int = 1024):
        self._times = np.zeros(size, dtype=np.float64)
        self._size, self.count = size, 0

    def tick(self, now: float) -> None:
        self._times[self.count % self._size] = now
        self.count += 1

    def rate(self) -> float:
        n = min(self.count, self._size)
        if n < 2:
            return 0.0
        newest = self._times[(self.count - 1) % self._size]
        oldest = self._times[self.count % self._size] if self.count > self._size else self._times[0]
        return (n - 1) / (newest - oldest) if newest > oldest else 0.0


class Metrics:
    """Counters and latency windows shared by the pipeline threads."""

    def __init__(self, window: int = 4096):
        self.latency = {stage: LatencyWindow(window) for stage in STAGES}
        self.rate = RateMeter()
        self._lock = threading.Lock()
        self.frames = 0
        self.dropped: dict[str, int] = {}
        self.alarms = 0
        self.model_swaps = 0
        self.key_stage_healthy = False
        self.info = {"model_id": "", "key_fingerprint": "", "sensor_fingerprint": ""}
        self.started = time.monotonic()
        self.refused = 0
        self.sink_stats: Callable[[], dict[str, dict[str, int]]] = dict

    def observe(self, stage: str, seconds: float) -> None:
        """Record one latency sample; each stage is written by a single thread."""
        self.latency[stage].add(seconds)

    def frame_done(self) -> None:
        with self._lock:
            self.frames += 1
            self.rate.tick(time.monotonic())

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def alarm(self) -> None:
        with self._lock:
            self.alarms += 1

    def refuse(self) -> None:
        with self._lock:
            self.refused += 1

    @property
    def dropped_total(self) -> int:
        with self._lock:
            return sum(self.dropped.values())

    def latency_ms(self) -> dict[str, dict[str, float]]:
        return {stage: dict(zip(("p50", "p99"), (round(q * 1e3, 4) for q in w.quantiles())))
                for stage, w in self.latency.items()}

    def snapshot(self) -> dict:
        """Plain numbers for the stats record and the run summary."""
        sinks = self.sink_stats()
        with self._lock:
            return {"frames": self.frames, "dropped": sum(self.dropped.values()),
                    "dropped_by_reason": dict(self.dropped), "fps": round(self.rate.rate(), 2),
                    "alarms": self.alarms, "refused": self.refused, "model_swaps": self.model_swaps,
                    "sink_lost": sum(s.get("lost", 0) for s in sinks.values()), "sinks": sinks,
                    "latency_ms": self.latency_ms(), "uptime_s": round(time.monotonic() - self.started, 3),
                    **self.info}

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        snap = self.snapshot()
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP keycam_{name} {help_}")
            out.append(f"# TYPE keycam_{name} {kind}")
            out.extend(f"keycam_{name}{labels} {value:.9g}" if isinstance(value, float)
                       else f"keycam_{name}{labels} {value}" for labels, value in samples)

        metric("frames_total", "counter", "Frames that went through the whole pipeline.",
               [("", snap["frames"])])
        metric("dropped_frames_total", "counter", "Frames dropped, by reason (never silently).",
               [(f'{{reason="{r}"}}', n) for r, n in sorted(snap["dropped_by_reason"].items())] or [("", 0)])
        metric("fps", "gauge", "Frames per second over the last 1024 frames.", [("", float(snap["fps"]))])
        samples: list[tuple[str, float]] = []
        for stage, window in self.latency.items():
            for q, v in zip(QUANTILES, window.quantiles()):
                samples.append((f'{{stage="{stage}",quantile="{q}"}}', v))
        metric("stage_latency_seconds", "summary", "Per-stage latency: capture = camera.read (includes "
               "waiting for the next sensor frame), key = key stage + ADC, infer = model, egress = record + "
               "guard + sinks.", samples)
        out.extend(f'keycam_stage_latency_seconds_sum{{stage="{s}"}} {w.total:.9g}\n'
                   f'keycam_stage_latency_seconds_count{{stage="{s}"}} {w.count}'
                   for s, w in self.latency.items())
        metric("alarms_total", "counter", "Alarm records raised.", [("", snap["alarms"])])
        metric("egress_refused_total", "counter", "Records the egress guard refused.", [("", snap["refused"])])
        metric("model_swaps_total", "counter", "Model/key pairs hot-swapped in.", [("", snap["model_swaps"])])
        metric("key_stage_healthy", "gauge", "1 when the key stage is healthy, 0 while failing closed.",
               [("", int(self.key_stage_healthy))])
        metric("sink_sent_total", "counter", "Records acknowledged by each sink.",
               [(f'{{sink="{n}"}}', s.get("sent", 0)) for n, s in sorted(snap["sinks"].items())] or [("", 0)])
        metric("sink_lost_total", "counter", "Records a sink had to give up (buffer full, write error).",
               [(f'{{sink="{n}"}}', s.get("lost", 0)) for n, s in sorted(snap["sinks"].items())] or [("", 0)])
        labels = ",".join(f'{k}="{v}"' for k, v in self.info.items())
        metric("model_info", "gauge", "Running model id and key fingerprints.", [(f"{{{labels}}}", 1)])
        return "\n".join(out) + "\n"


class MetricsServer:
    """Serves `Metrics.prometheus()` at http://127.0.0.1:<port>/metrics in a daemon thread."""

    def __init__(self, metrics: Metrics, port: int):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = metrics.prometheus().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        try:
            self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on 127.0.0.1:{port}: {exc.strerror}; "
                              "choose another metrics.port (0 = any free port)") from exc
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="keycam-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
