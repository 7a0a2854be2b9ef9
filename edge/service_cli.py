"""`keycam run`: the device service (what the systemd unit starts)."""
from __future__ import annotations

import json
import logging

import click

EXIT_RECORDS_LOST = 3   # the run finished but a sink did not deliver every record


def format_summary(summary: dict) -> str:
    """A short human-readable summary of a run."""
    lat = "  ".join(f"{stage} {q['p50']:.3f}/{q['p99']:.3f}" for stage, q in summary["latency_ms"].items())
    sinks = ", ".join(f"{name} {s.get('sent', 0)} delivered, {s.get('lost', 0)} lost"
                      for name, s in summary["sinks"].items()) or "none"
    drops = ", ".join(f"{k} {v}" for k, v in sorted(summary["dropped_by_reason"].items())) or "none"
    return (f"keycam run: {summary['frames']} frames in {summary['elapsed_s']:.2f}s = {summary['fps']:.1f} fps "
            f"({summary['stop_reason']}); dropped {summary['dropped']} ({drops}); alarms {summary['alarms']}; "
            f"refused {summary['refused']}\n  sinks: {sinks}\n  latency ms p50/p99: {lat}\n"
            f"  model {summary['model_id']}  key {summary['key_fingerprint'][:16]}  "
            f"sensor {summary['sensor_fingerprint'][:16]}")


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Device YAML config (see examples/sim-device.yaml).")
@click.option("--frames", type=click.IntRange(min=1), default=None,
              help="Stop after this many frames entered the pipeline and print a summary.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Override metrics.port (0: any free port).")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
              help="Also write the run summary as JSON to this file.")
@click.option("--check", "check_only", is_flag=True,
              help="Only validate the config and its files (like `keycam config check`), then exit.")
@click.option("-v", "--verbose", count=True,
              help="More log output on stderr (-v info, -vv debug); same as `keycam -v run`.")
def run(config_path: str, frames: int | None, metrics_port: int | None, summary_json: str | None,
        check_only: bool, verbose: int) -> None:
    """Run the device service: camera -> key stage -> keyed model -> egress guard -> sinks.

    Records go to the configured sinks (stdout: JSON lines); logs and the summary go to stderr.
    At start-up one line on stderr names the metrics URL (`keycam -q run` silences it).
    SIGTERM/SIGINT drain the pipeline, flush the sinks and exit 0; SIGHUP checks for a new model.

    Exit status: 0 when every record reached every sink; 3 when a sink lost records (a closed
    stdout pipe, a serial write error, a full MQTT buffer): the summary counts them per sink;
    1 for errors (one line).

    \b
    Example:
      keycam run --config examples/sim-device.yaml --frames 1000
    """
    import dataclasses

    from base.cli import configure_logging
    from edge.config import load_config
    from edge.service import Service
    root = logging.getLogger()       # the root group's --log-level/-v/-q set it up; `run -v` adds to that
    level = root.getEffectiveLevel() if root.handlers else logging.WARNING
    if verbose:                      # `run -v` only adds output: it must not undo `keycam -q`
        level = min(level, logging.INFO if verbose == 1 else logging.DEBUG)
    configure_logging(level)
    if check_only:
        from edge.config_cli import check_device
        click.echo(check_device(config_path))
        return
    cfg = load_config(config_path)
    if metrics_port is not None:
        cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, port=metrics_port))
    announce = (lambda line: click.echo(line, err=True)) if level <= logging.WARNING else None  # not -q
    summary = Service(cfg, max_frames=frames, announce=announce).run()
    click.echo(format_summary(summary), err=True)
    if summary_json:
        with open(summary_json, "w") as fh:
            json.dump(summary, fh, indent=2)
    if summary["sink_lost"]:
        raise SystemExit(EXIT_RECORDS_LOST)
