"""Attack 5, frames only: correlation graph matching of captured keyed frames to public images."""
from __future__ import annotations

import numpy as np
import pytest

from hardware.preadc import adc
from tools.attacks.frames_only import FAST_STARTS, Starts, attack_frames, correlation, run_frames_only, spectral_match
from tools.attacks.metrics import similarity
from tools.attacks.target import AttackError
from tools.datasets import load_dataset

SHAPE = (14, 14)
STARTS = Starts(eigen=(4, 8), random=1, maxiter=20)


@pytest.fixture(scope="module")
def small_mnist():
    """MNIST downsampled to 14x14 (2x2 means): public frames and frames for the victim to capture."""
    images, _ = load_dataset("mnist", "train", limit=3600)
    x = images.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(images), -1) / 255.0
    return x[:3000], x[3000:]


def _permutation_key(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    perm, gain, bias = rng.permutation(n), rng.uniform(0.4, 0.9, n), rng.uniform(0.0, 0.1, n)
    return (lambda x: adc(gain * x[:, perm] + bias)), perm


def _mixing_key(n: int, terms: int = 8, seed: int = 2):
    """Each keyed pixel: non-negative weights on `terms` random pixels (no dominant source), then permuted."""
    rng = np.random.default_rng(seed)
    m = np.zeros((n, n))
    for i in range(n):
        m[i, rng.choice(n, terms, replace=False)] = rng.uniform(0.5, 1.0, terms)
    m /= m.sum(axis=1, keepdims=True)
    return lambda x: adc(x @ m.T), m.argmax(axis=1)


def test_correlation_zeroes_constant_pixels_and_the_diagonal():
    x = np.random.default_rng(0).normal(size=(50, 4))
    x[:, 2] = 3.0
    c = correlation(x)
    assert np.allclose(np.diag(c), 0) and np.allclose(c[2], 0) and np.allclose(c[:, 2], 0)
    assert np.allclose(c[0, 1], np.corrcoef(x[:, 0], x[:, 1])[0, 1])


def test_spectral_match_undoes_a_relabelling_and_eigenvector_signs():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 3)) * [3.0, 2.0, 1.0] + [0.5, -0.2, 0.1] * np.abs(rng.normal(size=(30, 3))) ** 3
    perm = rng.permutation(30)
    assert np.array_equal(spectral_match(emb[perm] * [1, -1, 1], emb), perm)


@pytest.fixture(scope="module")
def permutation_attack(small_mnist):
    public, victim = small_mnist
    key, perm = _permutation_key(public.shape[1])
    return attack_frames(key(victim), public, STARTS), perm


def test_a_permutation_key_gives_its_pixels_away(small_mnist, permutation_attack):
    _, victim = small_mnist
    (recon, m, polarity), perm = permutation_attack
    placed = np.mean(m.source == perm)            # keyed pixel i shows plain pixel perm[i]
    lit = victim.max(axis=0)[perm] > 0
    assert np.mean(m.source[lit] == perm[lit]) > 0.5 and placed > 0.4
    assert polarity == "as is"
    blank = similarity(np.zeros_like(victim), victim, SHAPE)["ssim"]
    assert similarity(recon, victim, SHAPE)["ssim"] > blank + 0.2


def test_a_strong_mixing_key_keeps_its_pixels(small_mnist, permutation_attack):
    public, victim = small_mnist
    key, truth = _mixing_key(public.shape[1])
    recon, m, _ = attack_frames(key(victim), public, STARTS)
    assert np.mean(m.source == truth) < 0.1
    (recon_perm, *_), _ = permutation_attack
    assert similarity(recon, victim, SHAPE)["ssim"] < similarity(recon_perm, victim, SHAPE)["ssim"] - 0.15


@pytest.mark.slow
def test_frames_only_recognises_frames_keyed_by_a_permutation_profile(full_target):
    result, figs = run_frames_only(full_target, frames=(60, 400), public=3000, starts=FAST_STARTS,
                                   progress=lambda msg: None)
    assert set(result["by_frames"]) == {"60", "400"} and result["frames"] == 400
    at_400 = result["by_frames"]["400"]
    assert at_400["scored_frames"] == 400 and figs["recon"].shape == (400, 784)
    assert result["recognised"] == at_400["recognised"] > 0.5       # chance is 0.1
    assert result["pixels_placed"] > 0.05 and result["ssim"] > result["blank_ssim"]
    assert 0 < at_400["constant_pixels"] < 784


def test_frames_only_rejects_too_few_or_too_many_frames(full_target):
    with pytest.raises(AttackError, match="at least"):
        run_frames_only(full_target, frames=(5,), public=300, starts=FAST_STARTS, progress=lambda msg: None)
    with pytest.raises(AttackError, match="test split has 10000"):
        run_frames_only(full_target, frames=(10001,), public=300, starts=FAST_STARTS, progress=lambda msg: None)
