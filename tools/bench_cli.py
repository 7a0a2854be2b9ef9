"""`keycam bench ...`: each benchmark lives in its own module under tools/bench/."""
from __future__ import annotations

import click

from base.cli import LazyGroup

BENCHMARKS: dict[str, tuple[str, str]] = {
    "keyed": ("tools.bench.keyed:keyed", "Accuracy, size and latency of keyed vs unkeyed models."),
    "sensor": ("tools.bench.sensor:sensor", "Keyed-model accuracy vs read noise and ADC bits."),
    "pipeline": ("tools.bench.pipeline:pipeline", "End-to-end device pipeline throughput and latency."),
    "necessity": ("tools.bench.necessity:necessity", "Learned degradation vs keyed model (paper baseline)."),
    "keyfrontier": ("tools.bench.keyfrontier:keyfrontier", "Frames-only attack vs cost of the sensor key's mixing."),
    "align": ("tools.bench.align:align", "Per-frame cost of face alignment in the simulated key stage."),
}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Benchmarks that print a table and write JSON."""
