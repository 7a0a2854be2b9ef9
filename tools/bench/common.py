"""Shared benchmark helpers: progress lines, predictions, side-by-side latency, tables and JSON output."""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
import numpy as np

from base.cli import emit_json
from edge.runtime import TFLiteModel

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """Progress on stderr that names the bench, the item and the step, e.g.
    "bench keyed: mnist mix15: int8 latency, 2000 frames ..."; `enabled=False` prints nothing."""

    bench: str
    item: str
    enabled: bool = True

    def label(self, step: str) -> str:
        """The prefix of every progress line for `step`."""
        return f"bench {self.bench}: {self.item}: {step}"

    def step(self, step: str) -> None:
        """One line announcing that `step` starts."""
        if self.enabled:
            click.echo(f"{self.label(step)} ...", err=True)

    def bar(self, items: Iterable[T], step: str, length: int | None = None) -> AbstractContextManager[Iterable[T]]:
        """A progress bar over `items` labelled with `step` (hidden when disabled)."""
        return click.progressbar(items, length=length, label=self.label(step), file=sys.stderr, show_pos=True,
                                 hidden=not self.enabled)


def predict_labels(model: TFLiteModel, frames: np.ndarray, desc: str = "",
                   progress: Progress | None = None) -> np.ndarray:
    """Top-1 labels of a model over frames; with `progress`, a bar on stderr naming `desc` and the count."""
    out = np.empty(len(frames), dtype=np.int64)
    progress = progress or Progress("", "", enabled=False)
    with progress.bar(frames, f"{desc or 'predicting'}, {len(frames)} frames") as bar:
        for i, frame in enumerate(bar):
            out[i] = int(np.argmax(model.invoke(frame)))
    return out


LATENCY_ROUNDS, LATENCY_PER_ROUND = 5, 200
LATENCY_FRAMES = LATENCY_ROUNDS * LATENCY_PER_ROUND     # timed invokes per model by default


def latency_ms(models: dict[str, TFLiteModel], frames: dict[str, np.ndarray], rounds: int = LATENCY_ROUNDS,
               per_round: int = LATENCY_PER_ROUND) -> dict[str, float]:
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
    """Deliver a benchmark's result per the --json convention (base.cli)."""
    emit_json(None if path is None else str(path), data)
