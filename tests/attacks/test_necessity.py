"""The necessity baseline: differentiable SSIM, the joint degradation trade-off and its plot."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tools.attacks.metrics import ssim  # noqa: E402
from tools.bench.necessity import plot, run_necessity, ssim_torch  # noqa: E402

pytestmark = pytest.mark.torch


def test_torch_ssim_matches_numpy_ssim():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(4, 28, 28)), rng.uniform(size=(4, 28, 28))
    b[:2] = np.clip(a[:2] + rng.normal(0, 0.1, (2, 28, 28)), 0, 1)
    got = ssim_torch(torch.tensor(a[:, None]), torch.tensor(b[:, None])).numpy()
    assert np.allclose(got, ssim(a, b, (28, 28)), atol=0.02)


def test_penalty_makes_frames_less_intelligible(tmp_path):
    torch.set_num_threads(1)
    r = run_necessity("mnist", (0.0, 10.0), steps=30, train_limit=300, test_limit=60, keyed_point=False)
    free, penalised = r["curve"]
    assert free["accuracy"] > 0.25                       # chance is 0.1; 30 steps only
    assert penalised["ssim_degraded"] < free["ssim_degraded"]
    png = plot([r], tmp_path / "necessity.png")
    assert png.stat().st_size > 1000
