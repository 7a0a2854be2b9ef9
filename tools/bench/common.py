"""Shared benchmark helpers: predictions, side-by-side latency, tables and JSON output."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click
import numpy as np

from edge.cli_options import emit_json
from edge.runtime import TFLiteModel


def predict_labels(model: TFLiteModel, frames: np.ndarray, desc: str = "", progress: bool = True) -> np.ndarray:
    """Top-1 labels of a model over frames, with a progress bar on stderr."""
    out = np.empty(len(frames), dtype=np.int64)
    with click.progressbar(frames, label=desc or "predicting", file=sys.stderr,
                           show_pos=True, hidden=not progress) as bar:
        for i, frame in enumerate(bar):
            out[i] = int(np.argmax(model.invoke(frame)))
    return out


def latency_ms(models: dict[str, TFLiteModel], frames: dict[str, np.ndarray], rounds: int = 5,
               per_round: int = 200) -> dict[str, float]:
    """Median per-frame invoke latency of each model, measured interleaved in one process."""
    samples: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():          # warm-up
        for f in frames[name][:20]:
            model.invoke(f)
    for r in range(rounds):
        for name, model in models.items():
            batch = frames[name][(r * per_round) % max(len(frames[name]) - per_round, 1):][:per_round]
            for f in batch:
                t0 = time.perf_counter()
                model.invoke(f)
                samples[name].append(time.perf_counter() - t0)
    return {name: 1000.0 * statistics.median(v) for name, v in samples.items()}


def print_table(rows: list[tuple[str, str]], title: str) -> None:
    """Print a two-column table."""
    width = max(len(k) for k, _ in rows)
    click.echo(title)
    click.echo("-" * (width + 24))
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def write_json(path: str | Path | None, data: dict) -> None:
    """Deliver a benchmark's result per the --json convention (edge.cli_options)."""
    emit_json(None if path is None else str(path), data)
