"""Keys: exact inverses, sparse forms, determinism, file format and corruption handling."""
from __future__ import annotations

import numpy as np
import pytest

from keys.container import KeyFileError
from keys.drbg import Drbg
from keys.factors import Key, TileMix
from keys.generate import (
    KeyConfig,
    channel_layer_key,
    hierarchical_permutation,
    multiplex_matrix,
    output_key,
    row_condition,
    s_matrix,
    sensor_key,
    spatial_layer_key,
)
from keys.keyset import KeySet

SECRET = bytes(range(32))
CONFIGS = [KeyConfig(), KeyConfig(tile=2), KeyConfig(tile=4, permutation="hierarchical", block=4),
           KeyConfig(permutation="none", gain_range=(0.25, 4.0), bias_max=0.0), KeyConfig(scatter=5, mix_weight=0.55),
           KeyConfig(scatter=7, mixing="multiplex", stages=2)]


def all_keys():
    rng = Drbg(SECRET, "test")
    keys = [sensor_key(rng.child(f"s{i}"), (1, 16, 12), c) for i, c in enumerate(CONFIGS)]
    keys.append(spatial_layer_key(rng.child("l"), 300, KeyConfig(), "layer"))
    keys.append(channel_layer_key(rng.child("c"), 5, 36, KeyConfig(), "chan"))
    keys.append(output_key(rng.child("o"), 10, KeyConfig()))
    return keys


@pytest.mark.parametrize("key", all_keys(), ids=lambda k: f"{k.name}-{[f.kind for f in k.factors]}")
def test_inverse_is_exact_and_sparse_forms_agree(key):
    x = np.random.default_rng(0).uniform(0, 1, (7, key.size))
    y = key.apply(x)
    assert np.max(np.abs(key.apply_inverse(y) - x)) < 1e-12
    lin, inv, c = key.linear_csr(), key.inverse_linear_csr(), key.offset()
    assert np.max(np.abs((lin @ x.T).T + c - y)) < 1e-12
    assert np.max(np.abs((inv @ (y - c).T).T - x)) < 1e-12
    assert np.max(np.abs((inv @ lin).toarray() - np.eye(key.size))) < 1e-10


@pytest.mark.parametrize("config", CONFIGS)
def test_sensor_key_keeps_intensities_in_adc_range_and_scrambles(config):
    key = sensor_key(Drbg(SECRET, "s"), (1, 16, 12), config)
    x = np.random.default_rng(1).uniform(0, 1, (50, key.size))
    y = key.apply(x)
    assert y.min() >= 0 and y.max() <= 1 + 1e-12
    assert key.apply(np.ones(key.size)).max() <= 1 + 1e-12
    if config.permutation != "none":
        assert np.mean(np.isclose(np.argsort(key.apply(np.arange(key.size) / key.size)), np.arange(key.size))) < 0.2


def test_multiplex_mixing_is_non_negative_condition_bounded_and_secret():
    for t in (3, 7, 15, 31):
        s = s_matrix(t)
        assert set(np.unique(s)) == {0.0, 1.0} and np.all(s.sum(axis=1) == (t + 1) // 2)
        assert np.isclose(row_condition(s), np.sqrt(t + 1))          # the optimum for 0/1 weighing designs
    bound = 1.5 * 4.0
    mats = [multiplex_matrix(Drbg(SECRET, f"m{i}"), 15, bound) for i in range(4)]
    for m in mats:
        assert m.min() >= 0 and np.allclose(m.sum(axis=1), 1.0) and row_condition(m) <= bound + 1e-9
        assert np.all((m > 0).sum(axis=1) >= 2) and 0.3 < np.mean(m > 0) < 0.7    # every pixel mixes several
    patterns = {tuple((m > 0).reshape(-1)) for m in mats}
    assert len(patterns) == 4                                            # a secret per group, not one public matrix
    assert not any(np.array_equal(m > 0, s_matrix(15) > 0) for m in mats)


def test_two_multiplex_stages_spread_each_keyed_pixel_over_about_g_squared_pixels():
    key = sensor_key(Drbg(SECRET, "two"), (1, 28, 28), KeyConfig(scatter=15, mixing="multiplex", stages=2))
    assert sum(isinstance(f, TileMix) for f in key.factors) == 2
    lin = key.linear_csr()
    assert lin.min() >= 0                                                # non-negative light transport
    assert 30 < np.diff(lin.indptr).mean() < 15 * 15
    one = sensor_key(Drbg(SECRET, "two"), (1, 28, 28), KeyConfig(scatter=15, mixing="multiplex"))
    assert np.diff(one.linear_csr().indptr).max() <= 15


@pytest.mark.parametrize("bad", [dict(scatter=4, mixing="multiplex"), dict(scatter=7, mixing="blend"),
                                 dict(scatter=7, mixing="multiplex", cond_factor=0.5),
                                 dict(scatter=0, stages=2), dict(scatter=7, mixing="multiplex", stages=0)])
def test_multiplex_options_are_validated(bad):
    with pytest.raises(ValueError):
        KeyConfig(**bad)


def test_layer_keys_commute_with_relu():
    for key in all_keys()[len(CONFIGS):len(CONFIGS) + 2]:
        assert key.is_positive_generalized_permutation
        x = np.random.default_rng(2).normal(size=(5, key.size))
        assert np.allclose(key.apply(np.maximum(x, 0)), np.maximum(key.apply(x), 0))
    assert not all_keys()[0].is_positive_generalized_permutation      # sensor key has a bias


def test_hierarchical_permutation_is_a_permutation_with_block_structure():
    perm = hierarchical_permutation(Drbg(SECRET, "h"), (1, 8, 8), 4)
    assert sorted(perm) == list(range(64))
    blocks = lambda idx: {(i // 8) // 4 * 2 + (i % 8) // 4 for i in idx}  # noqa: E731
    grid = np.arange(64).reshape(8, 8)
    for bi in range(2):
        for bj in range(2):
            dst = grid[bi * 4:bi * 4 + 4, bj * 4:bj * 4 + 4].reshape(-1)
            assert len(blocks(perm[dst])) == 1     # a destination block takes its pixels from one source block


def test_derivation_is_deterministic_and_secret_dependent():
    a = sensor_key(Drbg(SECRET, "x"), (1, 8, 8), KeyConfig())
    b = sensor_key(Drbg(SECRET, "x"), (1, 8, 8), KeyConfig())
    c = sensor_key(Drbg(bytes(32), "x"), (1, 8, 8), KeyConfig())
    d = sensor_key(Drbg(SECRET, "y"), (1, 8, 8), KeyConfig())
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    with pytest.raises(ValueError, match="256 bits"):
        Drbg(b"short", "x")


def test_scattered_mixing_groups_are_spread_over_the_frame():
    shape = (1, 16, 12)
    mix = sensor_key(Drbg(SECRET, "sc"), shape, KeyConfig(scatter=5)).factors[0]
    assert mix.kind == "tilemix" and mix.groups.shape == (192 // 5, 5)     # 2 leftover pixels stay unmixed
    ys, xs = np.divmod(mix.groups, 12)
    spread = np.maximum(ys.max(1) - ys.min(1), xs.max(1) - xs.min(1))
    assert np.median(spread) > 5                  # not tiles: a group spans most of the frame
    with pytest.raises(ValueError, match="not both"):
        KeyConfig(tile=4, scatter=4)


def test_gain_range_is_configurable_and_validated():
    key = sensor_key(Drbg(SECRET, "g"), (1, 8, 8), KeyConfig(gain_range=(1.0, 3.0), bias_max=0.0))
    g = key.factors[-1].g
    assert g.max() / g.min() <= 3.0 + 1e-9
    with pytest.raises(ValueError, match="gain range"):
        KeyConfig(gain_range=(0.0, 2.0))
    with pytest.raises(ValueError, match="invertible"):
        KeyConfig(mix_weight=0.5)


def make_keyset():
    keys = all_keys()
    n = len(CONFIGS)
    return KeySet("dev-1", "model-1", "full", keys[1], keys[n:n + 2], keys[n + 2], {"note": "test"})


def test_keyset_round_trip_and_fingerprint(tmp_path):
    ks = make_keyset()
    path = tmp_path / "dev.keys"
    ks.save(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    back = KeySet.load(path)
    assert back.fingerprint == ks.fingerprint and back.to_bytes() == ks.to_bytes()
    assert back.device_id == "dev-1" and len(back.layers) == 2 and back.output is not None
    x = np.random.default_rng(3).uniform(size=(3, ks.sensor.size))
    assert np.array_equal(back.sensor.apply(x), ks.sensor.apply(x))


def test_corrupted_truncated_and_foreign_files_are_clear_errors(tmp_path):
    blob = make_keyset().to_bytes()
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    cases = {"truncated": blob[:len(blob) // 3], "checksum": bytes(flipped), "tiny": blob[:10],
             "bad magic": b"NOTAKEY!" + blob[8:], "key not keyset": all_keys()[0].to_bytes()}
    for name, data in cases.items():
        with pytest.raises(KeyFileError) as err:
            KeySet.from_bytes(data)
        assert any(w in str(err.value) for w in ("truncated", "corrupted", "bad magic")), name
    with pytest.raises(KeyFileError, match="not found"):
        KeySet.load(tmp_path / "missing.keys")
    version = bytearray(blob)
    version[8] = 9
    with pytest.raises(KeyFileError, match="version 9"):
        KeySet.from_bytes(bytes(version))


def test_invalid_factor_contents_are_rejected():
    from keys.factors import Gain, Permutation, TileMix
    with pytest.raises(KeyFileError):
        Permutation(np.array([0, 0, 2]))
    with pytest.raises(KeyFileError):
        Gain(np.array([1.0, -1.0]))
    with pytest.raises(KeyFileError, match="singular"):
        TileMix(np.array([[0, 1]]), np.array([[[1.0, 1.0], [1.0, 1.0]]]))
    with pytest.raises(KeyFileError, match="size"):
        Key(5, [Gain(np.ones(4))])
