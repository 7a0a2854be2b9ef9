"""ONNX import: equivalence with ONNX's own reference evaluator, and clear errors for the rest."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from tests.kits.onnx import make_onnx, rand
from tools.ir import AvgPool, Conv, Dense, Softmax, forward
from tools.onnx_import import UnsupportedModelError, load_onnx


def test_small_cnn_matches_onnx_reference(small_cnn, frames):
    net = load_onnx(small_cnn)
    kinds = [type(layer) for layer in net.layers]
    assert kinds.count(Conv) == 2 and kinds.count(AvgPool) == 2 and kinds.count(Dense) == 2 and kinds[-1] is Softmax
    assert net.layers[0].act == "relu" and net.layers[2].act == "leaky_relu"   # BN fused, activations folded
    ref = ReferenceEvaluator(str(small_cnn))
    want = np.concatenate([ref.run(None, {"x": f[None].astype(np.float32)})[0] for f in frames])
    assert np.max(np.abs(forward(net, frames) - want)) < 1e-5


def test_matmul_add_and_flatten(tmp_path, rng):
    inits = {"w": rand(rng, 48, 7), "b": rand(rng, 7)}
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["y"], name="bias")]
    path = make_onnx(tmp_path / "mm.onnx", nodes, inits, (3, 4, 4), "y")
    x = rng.uniform(size=(4, 3, 4, 4))
    want = ReferenceEvaluator(str(path)).run(None, {"x": x[:1].astype(np.float32)})[0]
    assert np.allclose(forward(load_onnx(path), x[:1]), want, atol=1e-5)


@pytest.mark.parametrize("op,attrs", [("Tanh", {}), ("Exp", {}), ("LRN", {"size": 3})])
def test_unsupported_op_names_node_and_op(tmp_path, op, attrs):
    nodes = [helper.make_node(op, ["x"], ["y"], name="bad_node", **attrs)]
    path = make_onnx(tmp_path / "bad.onnx", nodes, {}, (1, 4, 4), "y")
    with pytest.raises(UnsupportedModelError, match=f"'bad_node' \\(op {op}\\)"):
        load_onnx(path)


def test_branching_graph_matches_onnx_reference(tmp_path, rng):
    inits = {"w": rand(rng, 2, 1, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="branch_a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w"], ["b"], name="branch_b", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
             helper.make_node("Add", ["a", "rb"], ["y"], name="merge")]
    path = make_onnx(tmp_path / "branch.onnx", nodes, inits, (1, 4, 4), "y")
    net = load_onnx(path)
    assert not net.sequential and net.inputs_of(len(net.layers) - 1) == (0, 1)
    x = rng.uniform(size=(1, 1, 4, 4))
    want = ReferenceEvaluator(str(path)).run(None, {"x": x.astype(np.float32)})[0]
    assert np.allclose(forward(net, x), want.reshape(1, -1), atol=1e-5)


def test_softmax_must_be_last_and_opset_checked(tmp_path, rng):
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Softmax", ["f"], ["s"], name="sm"),
             helper.make_node("Relu", ["s"], ["y"], name="after")]
    with pytest.raises(UnsupportedModelError, match="after.*last"):
        load_onnx(make_onnx(tmp_path / "sm.onnx", nodes, {}, (1, 2, 2), "y"))
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    with pytest.raises(UnsupportedModelError, match="opset 11"):
        load_onnx(make_onnx(tmp_path / "old.onnx", nodes, {}, (1, 2, 2), "y", opset=11))


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x00not an onnx file\xff" * 10)
    with pytest.raises(Exception, match="not a readable ONNX model|ONNX"):
        load_onnx(bad)
    with pytest.raises(Exception, match="not found"):
        load_onnx(tmp_path / "nope.onnx")
