"""Graph IR end to end: ONNX import of every supported op against ONNX's reference evaluator, keying per op
(float equivalence keyed vs plain under stem / full / mix15), int8 .tflite through the real interpreter, and
the errors that name node, op and profile."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from edge.runtime import TFLiteModel
from hardware.preadc import adc
from tests.kits.graphs import CASES
from tests.kits.onnx import SECRET, make_onnx, rand
from tools.ir import Concat, Conv, MaxPool, forward
from tools.keying.keyed import KeyingError, derive_keyset, key_network, verify_keyed
from tools.onnx_import import OPS, UnsupportedModelError, load_onnx, supported_ops
from tools.tflite.writer import write_tflite

FRAMES = np.random.default_rng(3).uniform(size=(160, 3, 8, 8))


@pytest.mark.parametrize("case", CASES)
def test_import_matches_onnx_reference(graph_onnx, case):
    path = graph_onnx(case)
    want = ReferenceEvaluator(str(path)).run(None, {"x": FRAMES[:4].astype(np.float32)})[0]
    assert np.max(np.abs(forward(load_onnx(path), FRAMES[:4]) - want)) < 1e-5


ADMITTED = [(c, p) for c in CASES for p in ("stem", "full", "mix15") if not (c == "maxpool" and p == "full")]


@pytest.mark.parametrize("case,profile", ADMITTED)
def test_keyed_graph_is_exact_in_float(graph_onnx, case, profile):
    net = load_onnx(graph_onnx(case))
    ks = derive_keyset(SECRET, "d", "m", net, profile)
    keyed = key_network(net, ks)
    assert verify_keyed(net, keyed, ks, FRAMES[:8].reshape(8, -1)) < 1e-9
    if profile != "full" and case in ("residual", "concat", "maxpool", "depthwise"):
        kinds = {type(layer) for layer in keyed.layers}
        assert {"residual": Conv, "concat": Concat, "maxpool": MaxPool, "depthwise": Conv}[case] in kinds
    if case == "depthwise" and profile == "stem":       # stays a depthwise conv, ReLU6 keys are permutations
        assert any(isinstance(layer, Conv) and layer.depthwise for layer in keyed.layers)
        assert any(np.all(k.factors[0].gain == 1) for k in ks.layers)
    assert ks.sensor.fingerprint != derive_keyset(b"\x01" * 32, "d", "m", net, profile).sensor.fingerprint


@pytest.mark.parametrize("case,profile", [("residual", "stem"), ("concat", "mix15"), ("depthwise", "stem"),
                                          ("maxpool", "stem"), ("prelu", "full"), ("sigmoid_clip", "stem"),
                                          ("resize", "stem"), ("bn_alone", "full")])
def test_keyed_graph_runs_int8_in_the_interpreter(graph_onnx, case, profile):
    net = load_onnx(graph_onnx(case))
    ks = derive_keyset(SECRET, "d", "m", net, profile)
    keyed = key_network(net, ks)
    x = adc(ks.sensor.apply(FRAMES.reshape(len(FRAMES), -1))) / 255.0
    blob, report = write_tflite(keyed, int8=True, calib=x[:100], sparse_ell=profile == "mix15")
    got = TFLiteModel(blob).predict((x[100:] * 255).round().astype(np.uint8))
    want = forward(keyed, x[100:])
    assert np.max(np.abs(got - want)) < 0.03 and np.mean(got.argmax(1) == want.argmax(1)) >= 0.9
    ops = {r["op"] for r in report}
    expected = {"residual": "ADD", "concat": "CONCATENATION", "depthwise": "DEPTHWISE_CONV_2D",
                "maxpool": "MAX_POOL_2D", "prelu": "PRELU", "sigmoid_clip": "LOGISTIC",
                "resize": "RESIZE_BILINEAR", "bn_alone": "FULLY_CONNECTED(sparse CSR, nnz=256)"}[case]
    assert any(op.startswith(expected) for op in ops) and ("MEAN" in ops or profile == "full")
    if case == "depthwise" and profile == "stem":             # ReLU6 after a conv is its fused activation
        assert "DEPTHWISE_CONV_2D + RELU6" in ops
    assert all(r.get("why") for r in report if r["dtype"] == "float32")


def test_float_tflite_of_a_keyed_graph_matches_numpy(graph_onnx):
    net = load_onnx(graph_onnx("resize"))
    ks = derive_keyset(SECRET, "d", "m", net, "stem")
    keyed = key_network(net, ks)
    x = ks.sensor.apply(FRAMES[:8].reshape(8, -1))
    assert np.max(np.abs(TFLiteModel(write_tflite(keyed)[0]).predict(x.astype(np.float32)) - forward(keyed, x))) < 1e-5


def test_max_pool_under_full_names_node_op_and_profile(graph_onnx):
    net = load_onnx(graph_onnx("maxpool"))
    with pytest.raises(KeyingError, match=r"node 'pool' \(op MaxPool\) admits no key under profile full"):
        derive_keyset(SECRET, "d", "m", net, "full")


def test_sensor_key_with_a_bias_is_refused_by_an_add(tmp_path, rng):
    inits = {"w": rand(rng, 1, 1, 3, 3), "w_b": rand(rng, 1), "wf": rand(rng, 2, 16), "wf_b": rand(rng, 2)}
    nodes = [helper.make_node("Conv", ["x", "w", "w_b"], ["c"], name="c", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["a"], name="skip_from_input"),
             helper.make_node("Flatten", ["a"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wf", "wf_b"], ["y"], name="fc", transB=1)]
    net = load_onnx(make_onnx(tmp_path / "skip.onnx", nodes, inits, (1, 4, 4), "y"))
    with pytest.raises(KeyingError, match=r"'skip_from_input' \(op Add\).*profile stem"):
        derive_keyset(SECRET, "d", "m", net, "stem")


def test_import_errors_name_node_and_op(tmp_path, rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="c"),
             helper.make_node("Mul", ["c", "c"], ["y"], name="square")]
    with pytest.raises(UnsupportedModelError, match=r"'square' \(op Mul\) is not supported.*MaxPool"):
        load_onnx(make_onnx(tmp_path / "mul.onnx", nodes, {"w": rand(rng, 1, 1, 1, 1)}, (1, 4, 4), "y"))
    nodes = [helper.make_node("Concat", ["x", "x"], ["y"], name="cat_h", axis=2)]
    with pytest.raises(UnsupportedModelError, match=r"'cat_h' \(op Concat\).*channels"):
        load_onnx(make_onnx(tmp_path / "cat.onnx", nodes, {}, (1, 4, 4), "y"))
    nodes = [helper.make_node("Resize", ["x", "", "s"], ["y"], name="half", mode="nearest")]
    with pytest.raises(UnsupportedModelError, match=r"'half' \(op Resize\).*integer"):
        load_onnx(make_onnx(tmp_path / "rs.onnx", nodes, {"s": np.array([1, 1, 0.5, 0.5])}, (1, 4, 4), "y"))
    assert supported_ops() == sorted(OPS) and {"Conv", "MaxPool", "PRelu", "Resize", "Concat"} <= set(OPS)


def test_dead_branches_are_refused(tmp_path, rng):
    nodes = [helper.make_node("Relu", ["x"], ["dead"], name="unused"),
             helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=1)]
    path = make_onnx(tmp_path / "dead.onnx", nodes, {"w": rand(rng, 2, 16), "b": rand(rng, 2)}, (1, 4, 4), "y")
    with pytest.raises(UnsupportedModelError, match="unused"):
        load_onnx(path)
