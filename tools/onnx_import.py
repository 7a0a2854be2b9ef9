"""Import a trained, strictly sequential CNN from ONNX (opset >= 13) into the keycam IR.

Supported: Conv, Gemm, MatMul(+Add), Add (bias), Relu, LeakyRelu, AveragePool, BatchNormalization
(fused into the preceding conv/dense), Dropout and Identity (dropped), Flatten/Reshape to a vector,
Constant, and Softmax as the last op. Anything else is an error naming the node and its op.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from base.errors import ModelError
from tools.ir import Activation, AvgPool, Conv, Dense, Flatten, Network, Softmax, output_shape

MIN_OPSET = 13


class UnsupportedModelError(ModelError):
    """The ONNX graph uses an op or a structure keycam cannot key."""


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node) -> str:
    return f"node {node.name or '(unnamed)'!r} (op {node.op_type})"


def load_onnx(path: str | Path) -> Network:
    """Parse an ONNX file into a Network; raises UnsupportedModelError on anything unsupported."""
    import onnx
    from onnx import numpy_helper
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{path} is not a readable ONNX model: {exc}") from exc
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise UnsupportedModelError(f"{path}: opset {opset} is too old; export with opset >= {MIN_OPSET}")
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) if t.data_type in (1, 10, 11)
              else numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedModelError(f"{path}: expected one input and one output, got {len(inputs)} and {len(graph.output)}")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
    if not dims or any(d <= 0 for d in dims):
        raise UnsupportedModelError(f"{path}: input {inputs[0].name!r} needs a fixed shape after the batch axis")
    meta = {p.key[len("keycam."):]: json.loads(p.value) for p in model.metadata_props if p.key.startswith("keycam.")}
    net = Network(tuple(dims), [], name=graph.name or path.stem, meta=meta)
    _Importer(net, consts, inputs[0].name).run(graph.node)
    if graph.output[0].name != _Importer.last_output:
        raise UnsupportedModelError(f"{path}: the graph output is not the end of a sequential chain")
    return net


class _Importer:
    last_output = ""

    def __init__(self, net: Network, consts: dict, current: str):
        self.net, self.consts, self.current = net, consts, current
        self.shape = tuple(net.input_shape)

    def _param(self, node, index: int) -> np.ndarray:
        name = node.input[index]
        if name not in self.consts:
            raise UnsupportedModelError(f"{_where(node)}: input {name!r} must be a constant (non-sequential graph?)")
        return self.consts[name]

    def _append(self, layer) -> None:
        self.shape = output_shape(layer, self.shape)
        self.net.layers.append(layer)

    def _last_linear(self, node):
        last = self.net.layers[-1] if self.net.layers else None
        if not isinstance(last, (Conv, Dense)) or last.act != "none":
            raise UnsupportedModelError(f"{_where(node)} must directly follow a Conv/Gemm/MatMul")
        return last

    def run(self, nodes) -> None:
        for node in nodes:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = np.asarray(_constant_value(node))
                continue
            if not node.input or node.input[0] != self.current:
                raise UnsupportedModelError(f"{_where(node)} does not consume the previous layer's output: "
                                            "only strictly sequential networks can be keyed")
            if self.net.layers and isinstance(self.net.layers[-1], Softmax):
                raise UnsupportedModelError(f"{_where(node)} follows Softmax; Softmax must be the last op")
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise UnsupportedModelError(f"{_where(node)} is not supported by keycam keying "
                                            "(supported: Conv, Gemm, MatMul, Add, Relu, LeakyRelu, AveragePool, "
                                            "BatchNormalization, Dropout, Flatten, Reshape, Softmax)")
            handler(node, _attrs(node))
            self.current = node.output[0]
        _Importer.last_output = self.current

    def _op_Conv(self, node, a):
        w = self._param(node, 1)
        b = self._param(node, 2) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
        if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])) or w.ndim != 4:
            raise UnsupportedModelError(f"{_where(node)}: only 2-D convs with group=1 and dilation=1 are supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedModelError(f"{_where(node)}: auto_pad is not supported; export explicit pads")
        p = list(a.get("pads", [0, 0, 0, 0]))
        self._append(Conv(w, b.astype(np.float64), tuple(a.get("strides", [1, 1])), (p[0], p[1], p[2], p[3])))

    def _op_Gemm(self, node, a):
        if a.get("transA", 0):
            raise UnsupportedModelError(f"{_where(node)}: transA=1 is not supported")
        w = self._param(node, 1)
        w = w if a.get("transB", 0) else w.T
        b = self._param(node, 2) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
        self._flatten_if_spatial()
        self._append(Dense(a.get("alpha", 1.0) * w, a.get("beta", 1.0) * np.broadcast_to(b, (w.shape[0],)).astype(np.float64)))

    def _op_MatMul(self, node, a):
        w = self._param(node, 1)
        self._flatten_if_spatial()
        self._append(Dense(w.T.copy(), np.zeros(w.shape[1])))

    def _op_Add(self, node, a):
        layer = self._last_linear(node)
        b = self._param(node, 1)
        if isinstance(layer, Conv):
            b = b.reshape(-1)
        layer.bias = layer.bias + np.broadcast_to(b.reshape(-1), layer.bias.shape)

    def _op_BatchNormalization(self, node, a):
        layer = self._last_linear(node)
        gamma, beta, mean, var = (self._param(node, i) for i in range(1, 5))
        scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
        shape = (-1,) + (1,) * (layer.weight.ndim - 1)
        layer.weight = layer.weight * scale.reshape(shape)
        layer.bias = (layer.bias - mean) * scale + beta

    def _set_act(self, node, act: str, alpha: float):
        last = self.net.layers[-1] if self.net.layers else None
        if isinstance(last, (Conv, Dense)) and last.act == "none":
            last.act, last.alpha = act, alpha
        else:
            self._append(Activation(act, alpha))

    def _op_Relu(self, node, a):
        self._set_act(node, "relu", 0.0)

    def _op_LeakyRelu(self, node, a):
        self._set_act(node, "leaky_relu", float(a.get("alpha", 0.01)))

    def _op_AveragePool(self, node, a):
        if any(a.get("pads", [0, 0, 0, 0])) or a.get("ceil_mode", 0):
            raise UnsupportedModelError(f"{_where(node)}: padded or ceil-mode average pooling is not supported")
        k = tuple(a["kernel_shape"])
        self._append(AvgPool(k, tuple(a.get("strides", k))))

    def _op_Dropout(self, node, a):
        pass

    _op_Identity = _op_Dropout

    def _flatten_if_spatial(self):
        if len(self.shape) > 1:
            self._append(Flatten())

    def _op_Flatten(self, node, a):
        if a.get("axis", 1) != 1:
            raise UnsupportedModelError(f"{_where(node)}: only Flatten(axis=1) is supported")
        self._flatten_if_spatial()

    def _op_Reshape(self, node, a):
        target = [int(v) for v in self._param(node, 1).reshape(-1)]
        if len(target) != 2 or target[1] not in (-1, int(np.prod(self.shape))):
            raise UnsupportedModelError(f"{_where(node)}: only reshapes to (batch, features) are supported, got {target}")
        self._flatten_if_spatial()

    def _op_Softmax(self, node, a):
        if len(self.shape) != 1 or a.get("axis", -1) not in (-1, 1):
            raise UnsupportedModelError(f"{_where(node)}: softmax must act on the final vector")
        self._append(Softmax())


def _constant_value(node):
    from onnx import numpy_helper
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
    raise UnsupportedModelError(f"{_where(node)}: only tensor-valued Constant nodes are supported")
