"""Attack 2 (known/chosen plaintext) and attack 4 (model reuse) on small slices."""
from __future__ import annotations

import pytest

from tools.attacks.plaintext import (
    affine_truth,
    binary_probes,
    fit_affine,
    from_binary,
    from_impulses,
    impulse_probes,
    relative_error,
    run_plaintext,
)
from tools.attacks.reuse import deployed_accuracies
from tools.attacks.target import AttackError


def test_impulses_and_a_dark_frame_recover_the_sensor_key(full_target):
    n = 28 * 28
    probes = impulse_probes(n)
    assert len(probes) == n + 1
    err = relative_error(from_impulses(full_target.keyed(probes)), affine_truth(full_target))
    assert err < 0.02                                   # ADC quantisation only


def test_binary_probes_recover_a_permutation_key_in_twelve_frames(full_target):
    probes = binary_probes(28 * 28)
    assert len(probes) == 12
    assert relative_error(from_binary(full_target.keyed(probes)), affine_truth(full_target)) < 0.02


def test_known_pairs_fit_improves_with_more_pairs(full_target):
    truth = affine_truth(full_target)
    errs = [relative_error(fit_affine(x, full_target.keyed(x)), truth)
            for x in (full_target.train_plain[:10], full_target.train_plain[:300])]
    assert errs[1] < errs[0]


def test_run_plaintext_report(full_target):
    result, figs = run_plaintext(full_target, pairs=(10, 300), test_frames=30)
    assert set(result["known"]) == {"10", "300"}
    assert result["known"]["300"]["ssim"] > result["known"]["10"]["ssim"]
    assert result["chosen"]["impulses/adc"]["ssim"] > 0.95
    assert result["frames_to_recover"] == 12
    with pytest.raises(AttackError, match="training frames"):
        run_plaintext(full_target, pairs=(10_000,))


def test_keyed_model_is_useless_on_plain_and_foreign_frames(full_target):
    acc = deployed_accuracies(full_target)
    assert acc["acc_keyed_int8"] > 0.9
    assert acc["acc_plain_frames"] < 0.35
    assert acc["acc_other_key"] < 0.35
