"""The necessity baseline: differentiable SSIM, the joint degradation trade-off and its plot."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tools.attacks.metrics import ssim  # noqa: E402
from tools.bench.necessity import plot, ssim_torch, train_tradeoff  # noqa: E402

pytestmark = pytest.mark.torch


def test_torch_ssim_matches_numpy_ssim():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(4, 28, 28)), rng.uniform(size=(4, 28, 28))
    b[:2] = np.clip(a[:2] + rng.normal(0, 0.1, (2, 28, 28)), 0, 1)
    got = ssim_torch(torch.tensor(a[:, None]), torch.tensor(b[:, None])).numpy()
    assert np.allclose(got, ssim(a, b, (28, 28)), atol=0.02)


def test_penalty_makes_frames_less_intelligible():
    from tools.datasets import load_dataset
    torch.set_num_threads(1)
    images, labels = load_dataset("mnist", "train", limit=400)
    x = torch.tensor(images[:300, None] / 255.0, dtype=torch.float32)
    y = torch.tensor(labels[:300], dtype=torch.long)
    test = torch.tensor(images[300:, None] / 255.0, dtype=torch.float32)
    free_d, free_c = train_tradeoff(x, y, 0.0, steps=40)
    pen_d, _ = train_tradeoff(x, y, 10.0, steps=40)
    with torch.no_grad():
        acc = float((free_c(free_d(test)).argmax(1).numpy() == labels[300:]).mean())
        assert acc > 0.2                                          # chance is 0.1; 40 steps only
        assert ssim_torch(pen_d(test), test).mean() < ssim_torch(free_d(test), test).mean()


def test_plot_and_cli_validation(tmp_path):
    from click.testing import CliRunner

    from tools.bench.necessity import necessity
    curve = [{"weight": w, "accuracy": a, "ssim_degraded": s, "ssim_attacker": s} for w, a, s in
             ((0.0, 0.98, 0.9), (1.0, 0.9, 0.5), (4.0, 0.7, 0.2))]
    keyed = {"profile": "full", "accuracy": 0.99, "ssim_ciphertext_only": 0.3, "ssim_structure_attack": 0.99}
    png = plot([{"dataset": "mnist", "curve": curve, "keyed": keyed}], tmp_path / "necessity.png")
    assert png.stat().st_size > 1000
    bad = CliRunner().invoke(necessity, ["--weights", "1,x"])
    assert bad.exit_code != 0 and "weights must be numbers" in bad.output
