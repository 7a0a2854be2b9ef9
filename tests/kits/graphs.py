"""Small ONNX graphs (residual, concat, depthwise, max pool, PReLU, ...) for the graph IR tests."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tests.kits.onnx import make_onnx, rand

CASES = ("residual", "concat", "depthwise", "maxpool", "prelu", "sigmoid_clip", "resize", "bn_alone")


def _conv(name, x, w, y, **kw):
    return helper.make_node("Conv", [x, w, f"{w}_b"], [y], name=name, **kw)


def build_graph(case: str, path, rng):
    """A (3, 8, 8) -> 5-class graph exercising `case`; returns the ONNX path."""
    c = 4
    inits = {"w0": rand(rng, c, 3, 3, 3), "w0_b": rand(rng, c), "wf": rand(rng, 5, 0), "wf_b": rand(rng, 5)}
    nodes = [_conv("stem", "x", "w0", "s0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["s0"], ["s"], name="stem_relu")]
    ch = c
    if case == "residual":          # identity + 1x1 projection shortcut (stride 2)
        inits.update(w1=rand(rng, c, c, 3, 3), w1_b=rand(rng, c), w2=rand(rng, 6, c, 3, 3), w2_b=rand(rng, 6),
                     wp=rand(rng, 6, c, 1, 1), wp_b=rand(rng, 6))
        nodes += [_conv("b1", "s", "w1", "b1", pads=[1, 1, 1, 1]),
                  helper.make_node("Add", ["b1", "s"], ["r1"], name="add1"),
                  helper.make_node("Relu", ["r1"], ["a1"], name="relu1"),
                  _conv("b2", "a1", "w2", "b2", pads=[1, 1, 1, 1], strides=[2, 2]),
                  _conv("proj", "a1", "wp", "p2", strides=[2, 2]),
                  helper.make_node("Add", ["b2", "p2"], ["r2"], name="add2"),
                  helper.make_node("Relu", ["r2"], ["h"], name="relu2")]
        ch = 6
    elif case == "concat":
        inits.update(w1=rand(rng, 3, c, 1, 1), w1_b=rand(rng, 3), w2=rand(rng, 2, c, 3, 3), w2_b=rand(rng, 2))
        nodes += [_conv("left", "s", "w1", "l"), _conv("right", "s", "w2", "r", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["r"], ["rr"], name="right_relu"),
                  helper.make_node("Concat", ["l", "rr", "s"], ["h"], name="cat", axis=1)]
        ch = 3 + 2 + c
    elif case == "depthwise":       # MobileNetV2 block: expand, depthwise, ReLU6, project, residual
        inits.update(we=rand(rng, 8, c, 1, 1), we_b=rand(rng, 8), wd=rand(rng, 8, 1, 3, 3), wd_b=rand(rng, 8),
                     wq=rand(rng, c, 8, 1, 1), wq_b=rand(rng, c), lo=np.zeros(()), hi=np.full((), 6.0))
        nodes += [_conv("expand", "s", "we", "e"), helper.make_node("Clip", ["e", "lo", "hi"], ["e6"], name="relu6a"),
                  _conv("dw", "e6", "wd", "d", pads=[1, 1, 1, 1], group=8),
                  helper.make_node("Clip", ["d", "lo", "hi"], ["d6"], name="relu6b"),
                  _conv("project", "d6", "wq", "q"), helper.make_node("Add", ["q", "s"], ["h"], name="res")]
    elif case == "maxpool":
        nodes += [helper.make_node("MaxPool", ["s"], ["h"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                                   pads=[1, 1, 1, 1])]
    elif case == "prelu":
        inits.update(w1=rand(rng, 6, c, 3, 3), w1_b=rand(rng, 6), slope=rng.uniform(0.05, 0.4, (6, 1, 1)))
        nodes += [_conv("c1", "s", "w1", "c1", pads=[1, 1, 1, 1]),
                  helper.make_node("Add", ["c1", "c1"], ["c2"], name="double"),
                  helper.make_node("PRelu", ["c2", "slope"], ["h"], name="prelu")]
        ch = 6
    elif case == "sigmoid_clip":
        inits.update(w1=rand(rng, c, c, 3, 3), w1_b=rand(rng, c), lo=np.full((), -0.5), hi=np.full((), 0.5))
        nodes += [_conv("c1", "s", "w1", "c1", pads=[2, 2, 2, 2], dilations=[2, 2]),
                  helper.make_node("Sigmoid", ["c1"], ["g"], name="gate"),
                  helper.make_node("Clip", ["g", "lo", "hi"], ["h"], name="clip")]
    elif case == "resize":
        inits.update(w1=rand(rng, c, c, 3, 3), w1_b=rand(rng, c), sc=np.array([1, 1, 2, 2.0]))
        nodes += [helper.make_node("AveragePool", ["s"], ["p"], name="down", kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("Resize", ["p", "", "sc"], ["u"], name="up_nearest", mode="nearest",
                                   coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                  _conv("c1", "u", "w1", "c1", pads=[1, 1, 1, 1]),
                  helper.make_node("AveragePool", ["c1"], ["p2"], name="down2", kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("Resize", ["p2", "", "sc"], ["h"], name="up_bilinear", mode="linear",
                                   coordinate_transformation_mode="half_pixel")]
    elif case == "bn_alone":
        inits.update(g=rng.uniform(0.5, 1.5, c), beta=rand(rng, c), mean=rand(rng, c), var=rng.uniform(0.5, 2, c))
        nodes += [helper.make_node("BatchNormalization", ["s", "g", "beta", "mean", "var"], ["h0"], name="bn"),
                  helper.make_node("Dropout", ["h0"], ["h"], name="drop")]
    else:
        raise ValueError(case)
    inits["wf"] = rand(rng, 5, ch)
    nodes += [helper.make_node("GlobalAveragePool", ["h"], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "wf", "wf_b"], ["y0"], name="fc", transB=1),
              helper.make_node("Softmax", ["y0"], ["y"], name="softmax", axis=1)]
    return make_onnx(path, nodes, inits, (3, 8, 8), "y", opset=15)
