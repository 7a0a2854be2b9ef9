"""The model-file attack: the sensor key A0 recovered from the keyed .tflite alone."""
from __future__ import annotations

import numpy as np
import pytest

from tools.attacks.grid import cover_cells, windows
from tools.attacks.model_file import balance, run_model_file
from tools.attacks.target import AttackError
from tools.tflite.writer import write_tflite


@pytest.mark.slow
@pytest.mark.parametrize("name", ["full_target", "stem_target"])
def test_permutation_keys_come_back_exactly(request, name):
    target = request.getfixturevalue(name)
    result, figs = run_model_file(target)
    assert result["pixels_placed"] == 1.0
    assert result["a0_linear_error"] < 1e-5 and result["a0_bias_error"] < 1e-5
    assert result["recognised"] == result["recognised_true_key"]
    assert figs["recon"].shape == target.plain.shape


@pytest.mark.slow
def test_scattered_mixing_comes_back_from_the_values(scatter4_target):
    result, _ = run_model_file(scatter4_target)
    assert result["group_size"] == 4
    assert result["pixels_placed"] >= 0.95
    assert result["a0_linear_error"] < 1e-3
    assert result["recognised"] >= result["recognised_true_key"] - 0.05
    assert result["ssim"] > 0.9


def test_balancing_recovers_a_doubly_stochastic_mixing_from_scaled_inverse_rows():
    rng = np.random.default_rng(0)
    eye = np.eye(4)
    mix = 0.55 * eye[rng.permutation(4)] + sum(0.1125 * eye[rng.permutation(4)] for _ in range(4))
    gains = rng.uniform(0.5, 2.0, 4)
    a0 = gains[:, None] * mix
    rows = np.linalg.inv(a0) * rng.uniform(-2, 2, 4)[:, None]     # each row known only up to scale and sign
    got = balance(rows)
    assert np.allclose(got / got.sum() * a0.sum(), a0)


def test_exact_cover_places_scattered_cells_and_reports_ambiguity():
    wins = windows(8, 8)
    cells = np.array([9, 30, 52])
    footprint = np.unique(np.concatenate([wins[c] for c in cells]))
    found = cover_cells(footprint, 3, wins)
    assert len(found) == 1 and np.array_equal(found[0], cells)
    assert cover_cells(footprint, 4, wins, limit=5)      # one spare cell fits inside the footprint in many ways
    assert cover_cells(footprint, 2, wins) == []


def test_a_model_without_keyed_layers_is_refused(full_target):
    from dataclasses import replace
    dense = replace(full_target, tflite_int8=write_tflite(full_target.net)[0])
    with pytest.raises(AttackError, match="neither"):
        run_model_file(dense)


def test_an_int8_inverse_key_stage_is_read_and_inverted():
    from keys.drbg import Drbg
    from keys.generate import KeyConfig, sensor_key
    from tools.attacks.model_file import key_from_int8_map
    from tools.tflite.builder import GraphBuilder, quant_params
    from tools.tflite.sparse_int8 import sparse_int8_layer
    from tools.tflite.writer import act_quant

    key = sensor_key(Drbg(b"k" * 32, "test"), (1, 8, 8), KeyConfig(scatter=4, mix_weight=0.55, mix_terms=4))
    inv = key.inverse_linear_csr()
    g = GraphBuilder()
    x = g.tensor("frame", [1, 64], np.int8, quant=quant_params(1 / 255, -128))
    y = sparse_int8_layer(g, x, (1 / 255, -128), inv, -(inv @ key.offset()), act_quant(-1.0, 1.5), "inverse_key")
    got = key_from_int8_map(g.finish([x], [y]), 64)
    true = key.linear_csr().toarray()
    rec = got.linear.toarray()
    assert np.array_equal(np.abs(rec).argmax(axis=1), np.abs(true).argmax(axis=1))
    assert np.linalg.norm(rec - true) / np.linalg.norm(true) < 0.02       # int8 weights: about 1/127 per row
    assert np.max(np.abs(got.offset - key.offset())) < 0.02
    assert key_from_int8_map(g.finish([x], [y]), 49) is None             # another frame size: not this stage


def test_snapping_rounds_multiplexing_rows_only():
    from tools.attacks.model_file import snap_block
    pattern = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]]) / 2.0
    noisy = pattern + np.array([[0.01, -0.01, 0.004], [0.0, 0.012, -0.01], [-0.008, 0.003, 0.0]])
    got = snap_block(noisy)
    assert np.array_equal(got == 0, pattern == 0)                  # the 0/1 pattern comes back exactly
    assert all(len(set(row[row > 0])) == 1 for row in got)       # one value per row
    assert np.allclose(got, pattern, atol=0.01)
    dominant = np.array([[0.55, 0.45], [0.45, 0.55]])        # a doubly-stochastic mixing stays as it is
    assert np.array_equal(snap_block(dominant), dominant)
