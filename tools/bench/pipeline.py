"""`keycam bench pipeline`: end-to-end throughput, per-stage latency and memory of the device service.

Runs the real service (camera -> key stage -> keyed model -> egress guard -> sink) from a device
config, with a discard sink by default so the number is the pipeline's, not a terminal's. Without
--camera-fps the replay camera is read as fast as the pipeline takes frames (capture blocks instead
of dropping: this measures capacity); with --camera-fps it runs at that rate and frames the pipeline
cannot take are dropped and counted (this measures whether it keeps up).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time

import click

from base.cli import json_option
from tools.bench.common import Progress, print_table, write_json


class RssSampler:
    """Samples the process RSS and frame count every `interval` s; prints progress to stderr."""

    def __init__(self, service, total: int, show: Progress, interval: float = 0.5):
        import psutil
        self.proc, self.service, self.total, self.interval = psutil.Process(), service, total, interval
        self.show = show
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        last_print = 0.0
        while not self._stop.wait(self.interval):
            frames = self.service.metrics.frames
            self.samples.append((frames, self.proc.memory_info().rss / 2 ** 20))
            if self.show.enabled and time.monotonic() - last_print > 2.0:
                last_print = time.monotonic()
                print(f"\r{self.show.label('running')}: {frames}/{self.total} frames, "
                      f"rss {self.samples[-1][1]:.1f} MB", end="", file=sys.stderr, flush=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        print(file=sys.stderr)

    def start_end(self, warmup: int) -> tuple[float, float]:
        """RSS once `warmup` frames are done (model loaded, buffers allocated) and at the last sample."""
        if not self.samples:
            rss = self.proc.memory_info().rss / 2 ** 20
            return rss, rss
        warm = next((mb for frames, mb in self.samples if frames >= warmup), self.samples[-1][1])
        return warm, self.samples[-1][1]


def bench_config(cfg, camera_fps: float | None, sink: str):
    """The device config as benchmarked: no metrics server, stats, hot-swap polling; discard sink."""
    from edge.sinks import DiscardSinkConfig
    camera = dataclasses.replace(cfg.camera, fps=camera_fps)
    pipeline = dataclasses.replace(cfg.pipeline, drop_when_full=camera_fps is not None, stats_interval_s=0.0)
    return dataclasses.replace(
        cfg, camera=camera, pipeline=pipeline, metrics=dataclasses.replace(cfg.metrics, enabled=False),
        model=dataclasses.replace(cfg.model, watch_interval_s=0.0),
        sinks=[DiscardSinkConfig("discard")] if sink == "discard" else cfg.sinks)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Device YAML config (e.g. examples/sim-device.yaml); its camera must be a replay camera.")
@click.option("--frames", type=click.IntRange(min=100), default=20000, show_default=True)
@click.option("--camera-fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Replay at this frame rate (drops counted); default: as fast as the pipeline goes.")
@click.option("--sink", type=click.Choice(["discard", "config"]), default="discard", show_default=True,
              help="discard: guard-check and count records; config: the config's own sinks.")
@json_option("json_path")
def pipeline(config_path: str, frames: int, camera_fps: float | None, sink: str, json_path: str | None) -> None:
    """End-to-end pipeline throughput, per-stage latency and RSS on a replay camera.

    \b
    Example:
      keycam bench pipeline --config examples/sim-device.yaml --frames 2000 --json
    """
    from base.errors import ConfigError
    from edge.config import load_config
    from edge.service import Service

    cfg = load_config(config_path)
    if cfg.camera.type != "replay":
        raise ConfigError(f"{config_path}: bench pipeline needs a replay camera, not {cfg.camera.type!r}")
    service = Service(bench_config(cfg, camera_fps, sink), max_frames=frames, latency_window=frames)
    show = Progress("pipeline", str(config_path))
    show.step(f"running {frames} frames "
              f"({'as fast as possible' if camera_fps is None else f'camera at {camera_fps} fps'})")
    with RssSampler(service, frames, show) as rss:
        summary = service.run()
    rss_start, rss_end = rss.start_end(warmup=min(1000, frames // 10))
    result = {"fps": summary["fps"], "frames": summary["frames"], "dropped": summary["dropped"],
              "latency_ms": summary["latency_ms"], "rss_start_mb": round(rss_start, 2),
              "rss_end_mb": round(rss_end, 2),
              "rss_growth_pct": round(100.0 * (rss_end - rss_start) / rss_start, 2) if rss_start else 0.0,
              "dropped_by_reason": summary["dropped_by_reason"], "camera_fps": camera_fps,
              "elapsed_s": summary["elapsed_s"], "model_id": summary["model_id"],
              "alarms": summary["alarms"], "refused": summary["refused"], "cpu_count": os.cpu_count()}
    rows = [("frames", str(result["frames"])), ("fps", f"{result['fps']:.1f}"), ("dropped", str(result["dropped"]))]
    rows += [(f"latency {stage} ms p50/p99", f"{q['p50']:.3f} / {q['p99']:.3f}")
             for stage, q in result["latency_ms"].items()]
    rows += [("rss start/end MB", f"{rss_start:.1f} / {rss_end:.1f} ({result['rss_growth_pct']:+.2f}%)")]
    print_table(rows, "keycam pipeline benchmark")
    write_json(json_path, result)
