"""`keycam bench sensor` on a small grid: table, JSON and PNG, and accuracy that responds to noise."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from keycam.cli import cli

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def test_sensor_bench_writes_table_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    result = CliRunner().invoke(cli, ["bench", "sensor", "--limit", "80", "--read-noise", "0,0.3",
                                      "--bits", "3,8", "--json", str(out_json), "--plot", str(out_png)])
    assert result.exit_code == 0, result.output
    assert "3 bits" in result.output and "0.3000 (76.5 LSB)" in result.output
    data = json.loads(out_json.read_text())
    assert data["n"] == 80 and len(data["results"]) == 4 and 0.2 < data["keyed_signal_fraction"] < 1
    cell = {(r["read_noise"], r["bits"]): r for r in data["results"]}
    assert cell[(0.0, 8)]["acc_keyed_int8"] >= 0.9 and cell[(0.0, 8)]["acc_keyed_float"] >= 0.9
    assert cell[(0.3, 8)]["acc_keyed_float"] < cell[(0.0, 8)]["acc_keyed_float"] - 0.2
    assert cell[(0.3, 8)]["acc_keyed_float"] < cell[(0.3, 8)]["acc_unkeyed_float"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sensor_bench_rejects_bad_grids():
    result = CliRunner().invoke(cli, ["bench", "sensor", "--bits", "8,x"])
    assert result.exit_code == 1 and "comma-separated numbers" in result.output
    result = CliRunner().invoke(cli, ["bench", "sensor", "--bits", "20"])
    assert result.exit_code == 1 and "1..16" in result.output
