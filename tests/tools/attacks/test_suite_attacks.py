"""`keycam attack all`: the suite's attack table, the profile x attack report, and the CLI end to end."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

from keycam.cli import cli
from tools.attacks import suite
from tools.attacks.suite import ATTACKS, Attack, Budget, run_all, table_rows
from tools.attacks.target import AttackError

FAST = Budget(fast=True, frames=(200,))


def _fake(name: str, calls: list) -> Attack:
    """Stands in for an attack (one not part of this branch, or a slow one); records what it was handed."""
    def run(target, budget):
        captured = budget.captured(target)
        calls.append((name, captured.shape, captured.dtype))
        return ({"pixels_placed": 0.25, "ssim": 0.5, "recognised": 0.75, "frames": len(captured)},
                {"plain": target.plain, "keyed": target.keyed(target.plain), "recon": 1 - target.plain,
                 "shape": target.shape})
    return Attack(name, run)


def _not_applicable(target, budget):
    raise AttackError("no handle on this profile")


def test_the_report_has_a_column_per_attack_and_n_a_where_an_attack_does_not_apply(tmp_path):
    calls: list = []
    attacks = (_fake("model_file", calls), Attack("support_only", _not_applicable), _fake("frames_only", calls))
    report = run_all("mnist", ["full"], 60, tmp_path, FAST, attacks)
    res = report["profiles"]["full"]
    assert calls == [("model_file", (200, 784), np.uint8), ("frames_only", (200, 784), np.uint8)]
    assert res["support_only"]["error"] == "no handle on this profile" and res["support_only"]["seconds"] >= 0
    assert res["acc_keyed_int8"] > 0.9 and res["size_bytes"] > 0 and (tmp_path / "attacks-mnist-full.png").is_file()
    header, row = table_rows(report)
    assert header == ("profile", "model-file px/recog", "support-only px/recog", "frames-only recog/SSIM@N",
                      "size KB", "lat ms", "acc int8")
    assert row[1] == "0.250/0.75" and row[2] == "n/a" and row[3] == "0.75/0.500@200"


@pytest.mark.slow
def test_attack_all_fast_runs_every_attack_end_to_end(tmp_path, monkeypatch):
    """The CLI over the whole suite; the model-file and support-only modules come from another branch, so
    fakes stand in for them here (test_attack_all_runs_the_real_model_attacks covers the real ones)."""
    calls: list = []
    fakes = {name: _fake(name, calls) for name in ("model_file", "support_only")}
    monkeypatch.setattr(suite, "ATTACKS", tuple(fakes.get(a.name, a) for a in ATTACKS))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["attack", "all", "--fast", "--profiles", "full", "--limit", "60",
                                                       "--frames", "200", "--json", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "full: frames-only attack ..." in result.stderr and "graph matching from the eigen16 start" in result.stderr
    report = json.loads(out.read_text())
    res = report["profiles"]["full"]
    for field in ("structure", "plaintext", "inversion", "reuse", "model_file", "support_only", "frames_only",
                  "size_bytes", "latency_ms", "acc_keyed_int8", "ciphertext_ssim", "figure"):
        assert field in res
    assert report["frames"] == [200] and res["frames_only"]["frames"] == 200
    assert [c[0] for c in calls] == ["model_file", "support_only"] and calls[1][1] == (200, 784)
    assert "frames-only recog/SSIM@N" in result.stdout and "model-file px/recog" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tools.attacks.model_file") is None
                    or importlib.util.find_spec("tools.attacks.support_only") is None,
                    reason="model-file / support-only attacks not merged into this branch yet")
def test_attack_all_runs_the_real_model_attacks(tmp_path):
    attacks = tuple(a for a in ATTACKS if a.name in ("model_file", "support_only"))
    report = run_all("mnist", ["full"], 60, None, FAST, attacks)
    res = report["profiles"]["full"]
    assert res["model_file"]["pixels_placed"] > 0.9 and "pixels_placed" in res["support_only"]
    assert len(table_rows(report)[1]) == 6


def test_cli_rejects_bad_frame_counts():
    result = CliRunner().invoke(cli, ["attack", "frames-only", "--frames", "100,x"])
    assert result.exit_code != 0 and "comma-separated frame counts" in result.stderr
    result = CliRunner().invoke(cli, ["attack", "frames-only", "--frames", "20000", "--profile", "full"])
    assert result.exit_code != 0 and "test split has 10000" in result.stderr
