"""Attacks that train with PyTorch: the torch re-implementation, learned inversion, fine-tuning, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from keys.profiles import DEFAULT_PROFILE  # noqa: E402
from tools.ir import forward  # noqa: E402

pytestmark = pytest.mark.torch


def test_torch_copy_of_the_keyed_net_matches_numpy(full_target):
    from tools.attacks.torchnet import TorchNet
    x = full_target.keyed(full_target.plain[:8]) / 255.0
    got = TorchNet(full_target.keyed_net)(torch.tensor(x, dtype=torch.float32)).softmax(1).detach().numpy()
    assert np.max(np.abs(got - forward(full_target.keyed_net, x))) < 1e-4


def test_fine_tuning_the_stolen_model_on_plain_frames_moves_it(full_target):
    from tools.attacks.torchnet import TorchNet, accuracy, train
    torch.set_num_threads(1)
    model = TorchNet(full_target.keyed_net)
    before = accuracy(model, full_target.plain, full_target.labels)
    train(model, full_target.train_plain[:100], full_target.train_labels[:100], steps=12)
    assert accuracy(model, full_target.plain, full_target.labels) > before + 0.1


def test_decoder_with_the_victims_key_beats_one_with_another_key(full_target):
    from tools.attacks.inversion import run_inversion
    result, figs = run_inversion(full_target, pairs=300, steps=150, test_frames=60)
    assert result["same_key"]["psnr"] > result["other_key"]["psnr"]
    assert figs["recon"].shape == full_target.plain.shape


def test_attack_all_writes_the_report_and_figures(tmp_path):
    from keycam.cli import cli
    out = tmp_path / "report.json"
    res = CliRunner().invoke(cli, ["attack", "all", "--json", str(out), "--limit", "20", "--profiles", "stem",
                                    "--fast"])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["default_profile"] == DEFAULT_PROFILE == "mix15"
    r = report["profiles"]["stem"]
    assert {"structure", "plaintext", "inversion", "reuse", "size_bytes", "latency_ms", "acc_keyed_int8"} <= set(r)
    assert {"pixels_recovered", "ssim"} <= set(r["structure"])
    assert (tmp_path / "attacks-mnist-stem.png").stat().st_size > 0
    assert "stem" in res.output
    bad = CliRunner().invoke(cli, ["attack", "all", "--json", str(out), "--profiles", "nope"])
    assert bad.exit_code != 0 and "unknown key profile" in bad.output
