"""Attack 1: grid layout from adjacency, and the sparsity-structure attack on real keyed .tflite files."""
from __future__ import annotations

import numpy as np
import pytest

from tools.attacks.grid import LayoutFailed, king_neighbours, layout, symmetries
from tools.attacks.metrics import psnr, ssim
from tools.attacks.reuse import deployed_accuracies
from tools.attacks.structure import run_structure
from tools.attacks.target import AttackError, build_target
from tools.attacks.tflite_read import first_sparse_layer
from tools.tflite.writer import write_tflite


def _relabel(h, w, seed=0):
    adj, perm = king_neighbours(h, w), np.random.default_rng(seed).permutation(h * w)
    out = [set() for _ in range(h * w)]
    for i in range(h * w):
        out[perm[i]] = {int(perm[j]) for j in adj[i]}
    return out, np.argsort(perm)


@pytest.mark.parametrize("h,w", [(3, 3), (5, 8), (12, 12)])
def test_layout_recovers_a_shuffled_grid_up_to_symmetry(h, w):
    adj, truth = _relabel(h, w)
    pos = layout(adj, h, w)
    assert max(np.mean(m[pos] == truth) for m in symmetries(h, w)) == 1.0


def test_layout_rejects_a_graph_that_is_not_a_grid():
    adj, _ = _relabel(6, 6, seed=1)
    a, b = 0, next(v for v in range(36) if v not in adj[0] and v != 0)
    adj[a].add(b)
    adj[b].add(a)
    with pytest.raises(LayoutFailed):
        layout(adj, 6, 6)
    with pytest.raises(LayoutFailed):
        layout(adj, 4, 9)


def test_ssim_and_psnr():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 28 * 28))
    assert np.allclose(ssim(x, x, (28, 28)), 1.0)
    noisy = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    assert np.all(ssim(noisy, x, (28, 28)) < 0.9)
    assert np.all(ssim(rng.uniform(size=x.shape), x, (28, 28)) < 0.1)
    assert np.all(psnr(noisy, x) < psnr(np.clip(x + 0.01, 0, 1), x))


@pytest.mark.parametrize("name", ["full_target", "stem_target"])
def test_permutation_keys_give_away_every_pixel(request, name):
    target = request.getfixturevalue(name)
    result, figs = run_structure(target)
    assert result["layout"] == "pixels"
    assert result["pixels_recovered"] == 1.0
    assert result["ssim"] > 0.95
    assert figs["recon"].shape == target.plain.shape


def test_tile_mixing_hides_pixels_inside_tiles():
    result, _ = run_structure(build_target("mnist", "tiled", limit=60, train_limit=300))
    assert result["layout"] == "tiles of 4x4"          # the tile arrangement still leaks
    assert result["group_size"] == 16
    assert result["pixels_recovered"] < 0.2            # but not the pixels inside a tile


def test_structure_attack_needs_a_sparse_layer(full_target):
    dense = write_tflite(full_target.net)[0]
    with pytest.raises(AttackError, match="no sparse"):
        first_sparse_layer(dense)


def test_scattered_mixing_keeps_accuracy_and_defeats_the_layouts_but_not_unmixing():
    target = build_target("mnist", "scatter4", limit=60, train_limit=300)
    assert deployed_accuracies(target)["acc_keyed_int8"] > 0.9
    result, _ = run_structure(target)
    assert result["layout"].startswith("failed")
    assert result["pixels_recovered"] < 0.05 and result["ssim"] < 0.1
    adaptive = result["adaptive"]                    # handed the groups' true positions, the attacker unmixes
    assert adaptive["method"] == "unmixed"
    assert adaptive["pixels_recovered"] > 0.3 and adaptive["ssim"] > result["ssim"] + 0.15
