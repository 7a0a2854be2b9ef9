"""The support-only attack: positions from the keyed model's sparsity pattern, then unmixing on frames."""
from __future__ import annotations

import pytest

from tools.attacks.support_only import run_support_only
from tools.attacks.target import AttackError


def test_support_places_most_scattered_pixels_and_unmixing_recovers_frames(scatter4_target):
    t = scatter4_target
    result, figs = run_support_only(t, t.keyed(t.train_plain))
    assert result["groups_covered"] >= 0.95 * result["groups"]
    assert result["pixels_placed"] > 0.35          # a group's members are told apart only by the unmixing
    assert result["recognised"] > 0.8 and result["ssim"] > 0.2
    assert figs["recon"].shape == t.plain.shape


def test_permutation_key_is_placed_exactly(full_target):
    result, _ = run_support_only(full_target, full_target.keyed(full_target.train_plain))
    assert result["pixels_placed"] == 1.0 and result["ssim"] > 0.95


def test_too_few_frames_is_refused(full_target):
    with pytest.raises(AttackError, match="captured"):
        run_support_only(full_target, full_target.keyed(full_target.train_plain[:1]))
