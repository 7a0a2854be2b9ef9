"""Tiny zoo models keyed end to end: float equivalence, int8 .tflite, patch keys and block-sparse stems."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from edge.runtime import TFLiteModel
from hardware.digitise import key_and_digitise
from hardware.preadc import adc
from keys.drbg import Drbg
from keys.generate import KeyConfig
from tests.kits.onnx import SECRET
from tools.ir import Conv, Dense, Gather
from tools.keying.cost import measure, projected_cost
from tools.keying.keyed import KeyingError, derive_keyset, key_network, logits_of, verify_keyed
from tools.keying.patchkey import patch_groups, patch_permutation, patch_sensor_key, within_patch_index
from tools.tflite.writer import block16_layout, write_tflite


def _frames(net, n=24, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, int(np.prod(net.input_shape))))


@pytest.mark.parametrize("name,profile", [("allconv32", "stem"), ("allconv32", "full"), ("face112", "stem"),
                                          ("face112", "stem-patch"), ("resnet20", "stem"), ("resnet20", "full"),
                                          ("mobilenetv2", "stem"), ("mobilenetv2", "mix15")])
def test_tiny_zoo_models_key_exactly_and_run_in_int8(tiny_nets, name, profile):
    net = tiny_nets[name]
    encrypt = name == "face112"
    ks = derive_keyset(SECRET, "d", "m", net, profile, output_encryption=encrypt)
    keyed = key_network(net, ks)
    x = _frames(net)
    assert verify_keyed(net, keyed, ks, x[:4]) < 1e-9
    blob, ops = write_tflite(keyed, int8=True, calib=key_and_digitise(ks.sensor, x) / 255.0)
    got = TFLiteModel(blob).predict(key_and_digitise(ks.sensor, x[:6]))
    if encrypt:
        got = ks.output.apply_inverse(got)
    want = logits_of(net, adc(x[:6]) / 255.0) if encrypt else None
    if want is not None:
        assert np.max(np.abs(got - want)) < 0.1 * np.max(np.abs(want))
    else:   # softmax output
        assert np.max(np.abs(got - _softmax_ref(net, x[:6]))) < 0.1
    stem_ops = [o for o in ops if o["layer"] == 0]
    if profile == "stem-patch":
        assert [o["op"].split()[0] for o in stem_ops] == ["GATHER"] and stem_ops[0]["dtype"] == "int8"
    elif profile == "stem":
        assert "sparse CSR" in stem_ops[0]["op"] and stem_ops[0]["dtype"] == "float32"


def _softmax_ref(net, x):
    from tools.ir import forward
    return forward(net, adc(x) / 255.0)


def test_patch_key_is_a_permutation_aligned_to_patches():
    shape, k = (3, 8, 12), 4
    perm = patch_permutation(Drbg(SECRET, "t"), shape, k)
    assert np.array_equal(np.sort(perm), np.arange(3 * 8 * 12))
    groups = {frozenset(g) for g in patch_groups(shape, k)}
    slots = perm.reshape(-1, 3 * k * k)
    assert {frozenset(s) for s in slots} == groups                   # every slot is one whole patch
    assert not np.array_equal(slots, patch_groups(shape, k))         # ... moved and shuffled


def test_stem_patch_keys_the_stem_as_gather_plus_conv_and_stays_small(tiny_nets):
    net = tiny_nets["face112"]
    x = _frames(net)
    plain = len(write_tflite(net, int8=True, calib=adc(x) / 255)[0])
    sizes = {}
    for profile in ("stem", "stem-patch"):
        ks = derive_keyset(SECRET, "d", "m", net, profile)
        keyed = key_network(net, ks)
        if profile == "stem-patch":
            gather, conv = keyed.layers[:2]
            assert isinstance(gather, Gather) and isinstance(conv, Conv) and conv.weight.shape[2:] == (1, 1)
            perm = ks.sensor.factors[0].perm
            assert not np.array_equal(np.sort(gather.index), gather.index)       # patches come back in order ...
            assert not np.array_equal(gather.index, np.argsort(perm))             # ... but not the key in clear
        else:
            assert isinstance(keyed.layers[0], Dense) and keyed.layers[0].sparse
        sizes[profile] = len(write_tflite(keyed, int8=True, calib=key_and_digitise(ks.sensor, x) / 255)[0])
    n = int(np.prod(net.input_shape))
    assert sizes["stem-patch"] < sizes["stem"]
    assert sizes["stem-patch"] - plain < 4 * n + 4096             # the int32 gather indices, little else


def test_stem_patch_gains_are_shared_by_every_patch():
    shape, k = (3, 8, 12), 4
    key = patch_sensor_key(Drbg(SECRET, "g"), shape, k, KeyConfig())
    perm, gain = key.factors[0].perm, key.factors[1].g
    place = within_patch_index(shape, k)[perm]
    for j in range(3 * k * k):
        assert np.ptp(gain[place == j]) < 1e-12                 # one gain per place inside the patch
    assert np.ptp(gain) > 0.1


def test_stem_patch_refuses_a_stem_that_is_not_a_patchify_conv(tiny_nets):
    with pytest.raises(KeyingError, match="first layer is an unpadded convolution"):
        derive_keyset(SECRET, "d", "m", tiny_nets["allconv32"], "stem-patch")


def test_block16_layout_round_trips_and_rejects_scattered_patterns():
    rng = np.random.default_rng(0)
    dense = np.zeros((5, 64))
    dense[0, 16:32] = rng.normal(size=16)
    dense[3, 0:16] = rng.normal(size=16)
    dense[3, 48:60] = rng.normal(size=12)
    values, indptr, cols = block16_layout(sp.csr_matrix(dense))
    rebuilt = np.zeros_like(dense)
    for r in range(5):
        for j in range(indptr[r], indptr[r + 1]):
            rebuilt[r, cols[j] * 16:(cols[j] + 1) * 16] = values[j]
    assert np.array_equal(rebuilt, dense) and list(indptr) == [0, 1, 1, 1, 3, 3]
    scattered = sp.csr_matrix((np.ones(5), (np.arange(5), np.arange(5) * 16)), shape=(5, 80))
    assert block16_layout(scattered) is None
    assert block16_layout(sp.csr_matrix(np.ones((2, 20)))) is None           # width not a multiple of 16


def test_projected_cost_matches_the_keyed_network_and_measure_runs(tiny_nets, tiny_onnx):
    net = tiny_nets["allconv32"]
    for profile in ("stem", "full"):
        keyed = key_network(net, derive_keyset(SECRET, "d", "m", net, profile))
        actual = sum(l.weight.nnz for l in keyed.layers if isinstance(l, Dense) and l.sparse)
        assert projected_cost(net, profile)["nnz"] == actual
    face = tiny_nets["face112"]
    keyed = key_network(face, derive_keyset(SECRET, "d", "m", face, "stem-patch"))
    assert projected_cost(face, "stem-patch")["nnz"] == sum(
        l.weight.nnz for l in keyed.layers if isinstance(l, Dense) and l.sparse) == 0     # gather + conv stem
    res = measure(str(tiny_onnx["allconv32"]), "stem", write=True, calib=4, invoke=3)
    assert res["size_int8"] > 0 and res["peak_rss_mb"] > 0 and res["total_s"] >= res["keying_s"]
    assert res["latency_ms"] > 0
    streamed = measure(str(tiny_onnx["allconv32"]), "full", write=False, calib=4)
    assert streamed["keyed_nnz"] == projected_cost(net, "full")["nnz"]


def test_stem_patch_refuses_a_conv_that_does_not_tile_the_frame():
    from tools.ir import Conv, Network
    net = Network((3, 10, 10), [Conv(np.ones((2, 3, 4, 4)), np.zeros(2), (4, 4), (0, 0, 0, 0))])
    with pytest.raises(KeyingError, match="patchify stem"):
        derive_keyset(SECRET, "d", "m", net, "stem-patch")
