"""Vectorised Toeplitz builders and generalized-permutation keying against their definitions."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from keys.factors import Bias, ChannelGenPerm, Gain, Key, Permutation, TileMix
from tests.kits.onnx import SECRET
from tools.ir import AvgPool, Conv, Network, conv_forward, conv_matrix, pool_forward, pool_matrix
from tools.keying.keyed import _key_generic, derive_keyset, genperm_form, key_network

CONVS = [  # (out, in, kernel, stride, pads, size)
    (3, 2, 3, 1, (1, 1, 1, 1), 6), (2, 1, 3, 2, (0, 0, 1, 1), 7), (4, 3, 4, 4, (0, 0, 0, 0), 8),
    (5, 2, 5, 1, (2, 2, 2, 2), 7), (2, 3, 3, 2, (1, 1, 1, 1), 8), (3, 2, 1, 1, (0, 0, 0, 0), 5),
]


@pytest.mark.parametrize("o,c,k,s,pads,size", CONVS)
def test_conv_matrix_is_the_convolution(o, c, k, s, pads, size):
    rng = np.random.default_rng(0)
    layer = Conv(rng.normal(size=(o, c, k, k)), rng.normal(size=o), (s, s), pads)
    x = rng.normal(size=(3, c, size, size))
    m = conv_matrix(layer, (c, size, size))
    want = conv_forward(x, layer) - layer.bias[None, :, None, None]
    assert np.allclose((m @ x.reshape(3, -1).T).T, want.reshape(3, -1), atol=1e-12)
    assert m.has_sorted_indices and np.all(np.diff(m.indices[m.indptr[0]:m.indptr[1]]) > 0)
    assert m.nnz == np.count_nonzero(m.toarray())          # no padding taps stored


def test_pool_matrix_is_the_pool_and_has_no_cross_channel_zeros():
    rng = np.random.default_rng(1)
    layer, x = AvgPool((2, 2), (2, 2)), rng.normal(size=(2, 5, 6, 6))
    m = pool_matrix(layer, (5, 6, 6))
    assert np.allclose((m @ x.reshape(2, -1).T).T, pool_forward(x, layer).reshape(2, -1))
    assert m.nnz == 5 * 9 * 4


def _random_keys(rng, n_in, out_shape):
    size = int(np.prod(out_shape))
    sensor = Key(n_in, [Permutation(rng.permutation(n_in)), Gain(rng.uniform(0.5, 2, n_in)),
                        Bias(rng.uniform(0, 0.1, n_in))], "sensor")
    spatial = Key(size, [Permutation(rng.permutation(size)), Gain(rng.uniform(0.5, 2, size))], "spatial")
    chan = Key(size, [ChannelGenPerm(rng.permutation(out_shape[0]), rng.uniform(0.5, 2, out_shape[0]),
                                     out_shape[1] * out_shape[2])], "channel")
    return sensor, spatial, chan


@pytest.mark.parametrize("sparse", [True, False])
def test_generalized_permutation_path_equals_the_matrix_products(sparse):
    rng = np.random.default_rng(2)
    w = sp.random(4 * 5 * 5, 2 * 5 * 5, density=0.1, random_state=3, format="csr")
    w = w if sparse else w.toarray()
    b = rng.normal(size=w.shape[0])
    sensor, spatial, chan = _random_keys(rng, w.shape[1], (4, 5, 5))
    for k_out in (spatial, chan, None):
        assert genperm_form(sensor) is not None
        wk, bk = _key_generic(w, b, sensor, k_out)
        lin_out = k_out.linear_csr() if k_out else sp.identity(w.shape[0])
        want_w = lin_out @ sp.csr_matrix(w) @ sensor.inverse_linear_csr()
        want_b = lin_out @ (b - sp.csr_matrix(w) @ (sensor.inverse_linear_csr() @ sensor.offset()))
        assert sp.issparse(wk) == sparse
        assert np.allclose(sp.csr_matrix(wk).toarray(), want_w.toarray(), atol=1e-12)
        assert np.allclose(bk, want_b, atol=1e-12)


def test_mixing_keys_fall_back_to_sparse_products():
    rng = np.random.default_rng(4)
    n = 16
    mats = np.stack([np.eye(4) * 0.7 + 0.3 * np.eye(4)[rng.permutation(4)] for _ in range(4)])
    key = Key(n, [TileMix(np.arange(n).reshape(4, 4), mats), Gain(rng.uniform(0.5, 2, n))])
    assert genperm_form(key) is None
    w, b = rng.normal(size=(6, n)), rng.normal(size=6)
    wk, bk = _key_generic(w, b, key, None)
    x = rng.uniform(size=(3, n))
    assert np.allclose(key.apply(x) @ wk.T + bk, x @ w.T + b)


def test_stem_keying_never_builds_a_dense_frame_sized_matrix():
    """Keying a 3x64x64 stem: a dense N x N key matrix would need 1.2 GB; the keying stays far below."""
    rng = np.random.default_rng(5)
    net = Network((3, 64, 64), [Conv(rng.normal(size=(8, 3, 3, 3)), rng.normal(size=8), (1, 1), (1, 1, 1, 1), "relu"),
                                Conv(rng.normal(size=(4, 8, 3, 3)), rng.normal(size=4), (2, 2), (0, 0, 0, 0))])
    ks = derive_keyset(SECRET, "d", "m", net, "stem")
    lines = []
    tracemalloc.start()
    keyed = key_network(net, ks, progress=lines.append)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 2 ** 20, f"keying peaked at {peak / 2 ** 20:.0f} MiB"
    assert len(lines) == 2 and "non-zeros" in lines[0]
    x = rng.uniform(size=(2, 3 * 64 * 64))
    from tools.keying.keyed import verify_keyed
    assert verify_keyed(net, keyed, ks, x) < 1e-10
