"""Small real networks written as ONNX files, for the keying, import and TFLite tests."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SECRET = bytes(range(32))


def make_onnx(path, nodes, inits, in_shape, out_name, opset=13, graph_inputs=None):
    """Write a small ONNX model; `inits` maps name -> numpy array."""
    graph = helper.make_graph(
        nodes, "test",
        graph_inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *in_shape])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def rand(rng, *shape, scale=0.3):
    return rng.normal(0, scale, shape)


def build_small_cnn(path, rng):
    """conv(1->4, 3x3 same)+BN+relu, avgpool 2, conv(4->6)+leakyrelu, avgpool 2, flatten, dense+relu, dense, softmax."""
    inits = {
        "w1": rand(rng, 4, 1, 3, 3), "b1": rand(rng, 4),
        "g": rng.uniform(0.5, 1.5, 4), "beta": rand(rng, 4), "mean": rand(rng, 4), "var": rng.uniform(0.5, 2, 4),
        "w2": rand(rng, 6, 4, 3, 3), "b2": rand(rng, 6),
        "shape": np.array([1, -1]), "w3": rand(rng, 20, 6 * 3 * 3), "b3": rand(rng, 20),
        "w4": rand(rng, 5, 20), "b4": rand(rng, 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("AveragePool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("LeakyRelu", ["c2"], ["r2"], name="lrelu2", alpha=0.1),
        helper.make_node("AveragePool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Dropout", ["p2"], ["d2"], name="drop"),
        helper.make_node("Reshape", ["d2", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g3"], name="fc1", transB=1),
        helper.make_node("Relu", ["g3"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "w4", "b4"], ["g4"], name="fc2", transB=1),
        helper.make_node("Softmax", ["g4"], ["y"], name="softmax", axis=1),
    ]
    inits["shape"] = inits["shape"].astype(np.int64)
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v if k == "shape" else v.astype(np.float32), k) for k, v in inits.items()])
    # opset 15: onnx's reference evaluator mis-evaluates opset-13 BatchNormalization
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), str(path))
    return path
