"""Issue 16: progress on long bench work names the bench, the item and the step (stderr)."""
from __future__ import annotations

from click.testing import CliRunner

from keycam.cli import cli


def _progress_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]


def test_bench_keyed_progress_names_the_item_and_each_step():
    result = CliRunner().invoke(cli, ["bench", "keyed", "--dataset", "mnist", "--profile", "stem", "--limit", "40"])
    assert result.exit_code == 0, result.output
    lines = _progress_lines(result.stderr)
    assert lines and all(line.startswith("bench keyed: mnist stem: ") for line in lines), lines
    steps = "\n".join(lines)
    for step in ("keying", "accuracy float, 40 frames", "accuracy keyed_int8, 40 frames",
                 "accuracy, another device's key, 40 frames", "latency int8 / keyed int8 / keyed float, 1000 frames"):
        assert f"bench keyed: mnist stem: {step}" in steps, steps
    assert "keycam bench keyed: mnist, profile stem" in result.stdout      # the table stays on stdout
