"""Keying: the keyed network on keyed frames gives the original outputs, per layer type and profile."""
from __future__ import annotations

import numpy as np
import pytest

from tests.kits.onnx import SECRET
from tools.ir import AvgPool, Conv, Dense, Network, Softmax, forward
from tools.keying.keyed import FLOAT_TOLERANCE, KeyingError, derive_keyset, key_network, logits_of, verify_keyed
from tools.onnx_import import load_onnx

PROFILES = ["full", "stem", "mix15"]


def layer_nets(rng):
    """One tiny network per layer type (each followed by what it needs to end in a vector)."""
    conv = lambda o, i, act="none", alpha=0.0: Conv(rng.normal(size=(o, i, 3, 3)), rng.normal(size=o),  # noqa: E731
                                                   (1, 1), (1, 1, 1, 1), act, alpha)
    dense = lambda o, i, act="none": Dense(rng.normal(size=(o, i)), rng.normal(size=o), act)  # noqa: E731
    from tools.ir import Flatten
    return {
        "conv": Network((1, 6, 6), [conv(3, 1), Flatten(), dense(4, 108)]),
        "conv_relu": Network((2, 6, 6), [conv(3, 2, "relu"), Flatten(), dense(4, 108)]),
        "conv_leaky": Network((1, 6, 6), [conv(3, 1, "leaky_relu", 0.2), Flatten(), dense(4, 108)]),
        "conv_stride2": Network((1, 6, 6), [Conv(rng.normal(size=(2, 1, 3, 3)), rng.normal(size=2), (2, 2),
                                                 (0, 0, 1, 1), "relu"), Flatten(), dense(3, 18)]),
        "avgpool": Network((1, 6, 6), [conv(2, 1, "relu"), AvgPool((2, 2), (2, 2)), Flatten(), dense(3, 18)]),
        "dense": Network((1, 4, 4), [Flatten(), dense(8, 16, "relu"), dense(5, 8), Softmax()]),
    }


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("kind", list(layer_nets(np.random.default_rng(0))))
@pytest.mark.parametrize("encrypt", [False, True])
def test_float_equivalence_per_layer_type(kind, profile, encrypt):
    rng = np.random.default_rng(7)
    net = layer_nets(rng)[kind]
    ks = derive_keyset(SECRET, "dev", "m", net, profile, encrypt)
    keyed = key_network(net, ks)
    x = rng.uniform(size=(10, int(np.prod(net.input_shape))))
    assert verify_keyed(net, keyed, ks, x) <= FLOAT_TOLERANCE
    out = forward(keyed, ks.sensor.apply(x))
    if encrypt:     # decode recovers the logits exactly
        assert np.allclose(ks.output.apply_inverse(out), logits_of(net, x), atol=1e-9)
    else:
        assert np.allclose(out, forward(net, x), atol=1e-9)


@pytest.mark.parametrize("profile", PROFILES)
def test_small_cnn_keyed_matches_and_plain_frames_do_not(small_cnn, frames, profile):
    net = load_onnx(small_cnn)
    ks = derive_keyset(SECRET, "dev", "m", net, profile)
    keyed = key_network(net, ks)
    x = frames.reshape(len(frames), -1)
    assert verify_keyed(net, keyed, ks, x) < 1e-10
    assert not np.allclose(forward(keyed, x), forward(net, x), atol=1e-3)          # plain frames: wrong
    other = derive_keyset(bytes(32), "dev", "m", net, profile)
    assert not np.allclose(forward(keyed, other.sensor.apply(x)), forward(net, x), atol=1e-3)  # other key


def test_profiles_differ_in_structure(small_cnn):
    net = load_onnx(small_cnn)
    full = key_network(net, derive_keyset(SECRET, "d", "m", net, "full"))
    stem = key_network(net, derive_keyset(SECRET, "d", "m", net, "stem"))
    assert all(not isinstance(layer, Conv) for layer in full.layers)
    assert sum(isinstance(layer, Dense) and layer.sparse for layer in stem.layers) == 1
    assert any(isinstance(layer, Conv) for layer in stem.layers)


def test_keyset_is_deterministic_per_device_and_model(small_cnn):
    net = load_onnx(small_cnn)
    a = derive_keyset(SECRET, "d1", "m", net, "full")
    assert a.fingerprint == derive_keyset(SECRET, "d1", "m", net, "full").fingerprint
    assert a.fingerprint != derive_keyset(SECRET, "d2", "m", net, "full").fingerprint
    assert a.fingerprint != derive_keyset(SECRET, "d1", "m2", net, "full").fingerprint


def test_mismatched_keyset_is_refused(small_cnn):
    net = load_onnx(small_cnn)
    ks = derive_keyset(SECRET, "d", "m", net, "full")
    ks.layers = ks.layers[:-1]
    with pytest.raises(KeyingError, match="layer keys"):
        key_network(net, ks)
    with pytest.raises(Exception, match="unknown key profile"):
        derive_keyset(SECRET, "d", "m", net, "nonsense")


def test_provisioning_keys_large_nets_in_float32(small_cnn, frames, monkeypatch):
    """Keyed nets whose sparse matrices would be large are keyed in float32 (half the memory), still
    checked against the original in float; small ones stay float64 so older key sets re-key bit for bit."""
    from keys.profiles import get_profile
    from tools.keying import provision
    net, prof = load_onnx(small_cnn), get_profile("full")
    assert provision.keying_dtype(net, prof) is np.float64
    small = provision.build_keyed_model(small_cnn, SECRET, "dev-1", prof, calib_frames=frames, float_model=False)
    monkeypatch.setattr(provision, "LARGE_KEYED_BYTES", 0)
    assert provision.keying_dtype(net, prof) is np.float32
    large = provision.build_keyed_model(small_cnn, SECRET, "dev-1", prof, calib_frames=frames, float_model=False)
    assert 1e-12 < large.report["float_max_rel_error"] < FLOAT_TOLERANCE
    assert small.report["float_max_rel_error"] < large.report["float_max_rel_error"]
