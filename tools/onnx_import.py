"""Import a trained CNN from ONNX (opset >= 13) into the keycam DAG IR (tools.ir).

One table, OPS, maps every supported ONNX op to its handler; anything else is an error naming the node
and its op (the README's list of supported ops is `supported_ops()`). BatchNormalization, a constant
Add (bias) and Relu / LeakyRelu fold into the Conv / Gemm / MatMul that produces their input when that
output has no other reader; otherwise they become layers of their own (a lone BatchNormalization is a
1x1 depthwise conv). Dropout and Identity are dropped; Constant nodes feed other nodes' parameters.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from base.errors import ModelError
from tools.ir import (
    INPUT,
    Activation,
    Add,
    AvgPool,
    Concat,
    Conv,
    Dense,
    Flatten,
    MaxPool,
    Network,
    Resize,
    Softmax,
    output_shape,
)

MIN_OPSET = 13


class UnsupportedModelError(ModelError):
    """The ONNX graph uses an op or a structure keycam cannot key."""


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node) -> str:
    return f"node {node.name or '(unnamed)'!r} (op {node.op_type})"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Importer:
    """Builds the Network node by node; `index` maps an ONNX tensor name to its layer (or INPUT)."""

    def __init__(self, net: Network, consts: dict, input_name: str, readers: Counter):
        self.net, self.consts, self.readers = net, consts, readers
        self.index: dict[str, int] = {input_name: INPUT}
        self.shapes: dict[int, tuple[int, ...]] = {INPUT: tuple(net.input_shape)}

    # -- helpers the handlers share ----------------------------------------------------------------
    def param(self, node, i: int, default=None) -> np.ndarray | None:
        """Constant input i of `node` (None / `default` when absent)."""
        if i >= len(node.input) or not node.input[i]:
            return default
        name = node.input[i]
        if name not in self.consts:
            raise UnsupportedModelError(f"{_where(node)}: input {name!r} must be a constant")
        return self.consts[name]

    def source(self, node, i: int = 0) -> int:
        name = node.input[i]
        if name not in self.index:
            what = "a constant" if name in self.consts else "not produced by a supported node"
            raise UnsupportedModelError(f"{_where(node)}: input {name!r} is {what}; it must be an activation")
        return self.index[name]

    def shape(self, node, i: int = 0) -> tuple[int, ...]:
        return self.shapes[self.source(node, i)]

    def add(self, node, layer, sources: list[int] | None = None) -> None:
        """Append `layer` reading `sources` (default: the node's first input) as the node's output."""
        sources = [self.source(node)] if sources is None else sources
        if any(isinstance(self.net.layers[j], Softmax) for j in sources if j != INPUT):
            raise UnsupportedModelError(f"{_where(node)} follows Softmax; Softmax must be the last op")
        layer.inputs, layer.name = tuple(sources), node.name or node.op_type
        try:
            shape = output_shape(layer, *(self.shapes[j] for j in sources))
        except ValueError as exc:
            raise UnsupportedModelError(f"{_where(node)}: {exc}") from exc
        self.net.layers.append(layer)
        self.index[node.output[0]] = len(self.net.layers) - 1
        self.shapes[len(self.net.layers) - 1] = shape

    def alias(self, node, source: int) -> None:
        self.index[node.output[0]] = source

    def flat(self, node) -> int:
        """The node's input as a vector (a Flatten layer is added for a spatial tensor)."""
        j = self.source(node)
        if len(self.shapes[j]) == 1:
            return j
        layer = Flatten(inputs=(j,), name=f"{node.name}/flatten")
        self.net.layers.append(layer)
        self.shapes[len(self.net.layers) - 1] = output_shape(layer, self.shapes[j])
        return len(self.net.layers) - 1

    def foldable(self, node):
        """The Conv / Dense producing the node's input when its output has no other reader, else None."""
        j = self.source(node)
        layer = self.net.layers[j] if j != INPUT else None
        if isinstance(layer, (Conv, Dense)) and layer.act == "none" and self.readers[node.input[0]] == 1:
            return layer
        return None

    def activation(self, node, act: str, alpha: float = 0.0) -> None:
        layer = self.foldable(node)
        if layer is not None:
            layer.act, layer.alpha = act, alpha
            self.alias(node, self.source(node))
        else:
            self.add(node, Activation(act, alpha))


# -- op handlers: (importer, node, attributes) ------------------------------------------------------
def _conv(im: _Importer, node, a: dict) -> None:
    w = im.param(node, 1)
    if w is None or w.ndim != 4:
        raise UnsupportedModelError(f"{_where(node)}: only 2-D convolutions with constant weights are supported")
    b = im.param(node, 2, np.zeros(w.shape[0]))
    if _text(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(f"{_where(node)}: auto_pad is not supported; export explicit pads")
    p = list(a.get("pads", [0, 0, 0, 0]))
    im.add(node, Conv(w.astype(np.float64), b.astype(np.float64), tuple(a.get("strides", [1, 1])),
                      (p[0], p[1], p[2], p[3]), dilation=tuple(a.get("dilations", [1, 1])),
                      groups=int(a.get("group", 1))))


def _gemm(im: _Importer, node, a: dict) -> None:
    if a.get("transA", 0):
        raise UnsupportedModelError(f"{_where(node)}: transA=1 is not supported")
    w = im.param(node, 1)
    w = w if a.get("transB", 0) else w.T
    b = im.param(node, 2, np.zeros(w.shape[0]))
    src = im.flat(node)
    im.add(node, Dense(a.get("alpha", 1.0) * w.astype(np.float64),
                       a.get("beta", 1.0) * np.broadcast_to(b, (w.shape[0],)).astype(np.float64)), [src])


def _matmul(im: _Importer, node, a: dict) -> None:
    w = im.param(node, 1)
    if w is None or w.ndim != 2:
        raise UnsupportedModelError(f"{_where(node)}: only a MatMul by a constant matrix is supported")
    src = im.flat(node)
    im.add(node, Dense(w.T.astype(np.float64), np.zeros(w.shape[1])), [src])


def _add(im: _Importer, node, a: dict) -> None:
    const = [i for i in (0, 1) if node.input[i] in im.consts]
    if not const:
        im.add(node, Add(), [im.source(node, 0), im.source(node, 1)])
        return
    if len(const) == 2:
        raise UnsupportedModelError(f"{_where(node)}: adds two constants")
    if const == [0]:
        node = _swapped(node)
    layer = im.foldable(node)
    if layer is None:
        raise UnsupportedModelError(f"{_where(node)}: a constant may only be added to the output of a "
                                    "Conv / Gemm / MatMul (as its bias)")
    b = np.asarray(im.consts[node.input[1]], dtype=np.float64).reshape(-1)
    layer.bias = layer.bias + np.broadcast_to(b, layer.bias.shape)
    im.alias(node, im.source(node))


def _swapped(node):
    import onnx
    return onnx.helper.make_node(node.op_type, [node.input[1], node.input[0]], list(node.output), name=node.name)


def _batch_norm(im: _Importer, node, a: dict) -> None:
    gamma, beta, mean, var = (np.asarray(im.param(node, i), dtype=np.float64) for i in range(1, 5))
    scale = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
    layer = im.foldable(node)
    if layer is not None:
        shape = (-1,) + (1,) * (layer.weight.ndim - 1)
        layer.weight = layer.weight * scale.reshape(shape)
        layer.bias = (layer.bias - mean) * scale + beta
        im.alias(node, im.source(node))
        return
    c = len(scale)
    if len(im.shape(node)) != 3:
        raise UnsupportedModelError(f"{_where(node)}: a batch norm that follows no conv needs a (C, H, W) input")
    im.add(node, Conv(scale.reshape(c, 1, 1, 1), beta - mean * scale, groups=c))


def _relu(im, node, a):
    im.activation(node, "relu")


def _leaky_relu(im, node, a):
    im.activation(node, "leaky_relu", float(a.get("alpha", 0.01)))


def _prelu(im: _Importer, node, a: dict) -> None:
    slope = np.asarray(im.param(node, 1), dtype=np.float64)
    shape = im.shape(node)
    if slope.size == 1:
        im.add(node, Activation("leaky_relu", float(slope.reshape(-1)[0])))
        return
    if slope.size not in (shape[0], int(np.prod(shape))) or (slope.size == shape[0] and len(shape) == 3
                                                            and slope.squeeze().ndim != 1):
        raise UnsupportedModelError(f"{_where(node)}: slopes of shape {slope.shape} are neither per channel nor "
                                    f"per unit of {shape}")
    im.add(node, Activation("prelu", slope.reshape(-1)))


def _sigmoid(im, node, a):
    im.add(node, Activation("sigmoid"))


def _clip(im: _Importer, node, a: dict) -> None:
    lo, hi = im.param(node, 1), im.param(node, 2)
    lo = float(a.get("min", -np.inf)) if lo is None else float(np.asarray(lo).reshape(-1)[0])
    hi = float(a.get("max", np.inf)) if hi is None else float(np.asarray(hi).reshape(-1)[0])
    if lo == 0.0 and hi == np.inf:
        im.activation(node, "relu")
    else:
        im.add(node, Activation("clip", lo=lo, hi=hi))


def _pool_geometry(node, a: dict) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) \
            or _text(a.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(f"{_where(node)}: ceil mode, dilation and auto_pad are not supported")
    k = tuple(a["kernel_shape"])
    p = list(a.get("pads", [0, 0, 0, 0]))
    return k, tuple(a.get("strides", [1, 1])), (p[0], p[1], p[2], p[3])


def _average_pool(im: _Importer, node, a: dict) -> None:
    k, s, pads = _pool_geometry(node, a)
    if any(pads):
        raise UnsupportedModelError(f"{_where(node)}: padded average pooling is not supported")
    im.add(node, AvgPool(k, s))


def _global_average_pool(im: _Importer, node, a: dict) -> None:
    shape = im.shape(node)
    if len(shape) != 3:
        raise UnsupportedModelError(f"{_where(node)}: needs a (C, H, W) input, got {shape}")
    im.add(node, AvgPool(shape[1:], shape[1:]))


def _max_pool(im: _Importer, node, a: dict) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise UnsupportedModelError(f"{_where(node)}: the indices output is not supported")
    if a.get("storage_order", 0):
        raise UnsupportedModelError(f"{_where(node)}: storage_order=1 is not supported")
    im.add(node, MaxPool(*_pool_geometry(node, a)))


def _dropped(im, node, a):
    if node.input[0] in im.consts:                 # exporters pass weights through Identity nodes too
        im.consts[node.output[0]] = im.consts[node.input[0]]
    else:
        im.alias(node, im.source(node))


def _flatten(im: _Importer, node, a: dict) -> None:
    if a.get("axis", 1) != 1:
        raise UnsupportedModelError(f"{_where(node)}: only Flatten(axis=1) is supported")
    im.alias(node, im.flat(node))


def _reshape(im: _Importer, node, a: dict) -> None:
    target = [int(v) for v in im.param(node, 1).reshape(-1)]
    size = int(np.prod(im.shape(node)))
    if len(target) != 2 or target[1] not in (-1, size):
        raise UnsupportedModelError(f"{_where(node)}: only reshapes to (batch, features) are supported, got {target}")
    im.alias(node, im.flat(node))


def _concat(im: _Importer, node, a: dict) -> None:
    sources = [im.source(node, i) for i in range(len(node.input))]
    if a.get("axis") not in (1, -len(im.shapes[sources[0]]) - 1):
        raise UnsupportedModelError(f"{_where(node)}: only concatenation along channels (axis 1) is supported")
    im.add(node, Concat(), sources)


def _resize(im: _Importer, node, a: dict) -> None:
    shape = im.shape(node)
    if len(shape) != 3:
        raise UnsupportedModelError(f"{_where(node)}: needs a (C, H, W) input, got {shape}")
    scales = im.param(node, 2 if node.op_type == "Resize" else 1)
    sizes = im.param(node, 3) if node.op_type == "Resize" else None
    if sizes is not None and np.size(sizes):
        scales = np.asarray(sizes, dtype=np.float64) / np.array((1,) + shape)
    if scales is None or np.size(scales) != 4 or scales[0] != 1 or scales[1] != 1 \
            or any(s != round(s) or s < 1 for s in scales[2:]):
        raise UnsupportedModelError(f"{_where(node)}: only integer spatial upsampling is supported, got scales "
                                    f"{None if scales is None else list(scales)}")
    mode = _text(a.get("mode", "nearest"))
    coords = _text(a.get("coordinate_transformation_mode", "half_pixel" if node.op_type == "Resize" else "asymmetric"))
    if mode == "nearest" and (coords != "asymmetric" or _text(a.get("nearest_mode", "round_prefer_floor")) != "floor"):
        # with integer scales, half_pixel + round_prefer_floor picks the same source pixels as asymmetric floor
        if not (coords in ("half_pixel", "pytorch_half_pixel") and
                _text(a.get("nearest_mode", "round_prefer_floor")) == "round_prefer_floor"):
            raise UnsupportedModelError(f"{_where(node)}: nearest resize needs asymmetric/floor or half_pixel "
                                        f"coordinates, got {coords}")
    elif mode in ("linear", "bilinear") and coords not in ("half_pixel", "pytorch_half_pixel"):
        raise UnsupportedModelError(f"{_where(node)}: bilinear resize needs half_pixel coordinates, got {coords}")
    elif mode not in ("nearest", "linear", "bilinear"):
        raise UnsupportedModelError(f"{_where(node)}: resize mode {mode!r} is not supported")
    im.add(node, Resize((int(scales[2]), int(scales[3])), "nearest" if mode == "nearest" else "bilinear"))


def _softmax(im: _Importer, node, a: dict) -> None:
    if len(im.shape(node)) != 1 or a.get("axis", -1) not in (-1, 1):
        raise UnsupportedModelError(f"{_where(node)}: softmax must act on the final vector")
    im.add(node, Softmax())


OPS: dict[str, Callable[[_Importer, object, dict], None]] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "Add": _add, "BatchNormalization": _batch_norm,
    "Relu": _relu, "LeakyRelu": _leaky_relu, "PRelu": _prelu, "Sigmoid": _sigmoid, "Clip": _clip,
    "AveragePool": _average_pool, "GlobalAveragePool": _global_average_pool, "MaxPool": _max_pool,
    "Dropout": _dropped, "Identity": _dropped, "Flatten": _flatten, "Reshape": _reshape, "Concat": _concat,
    "Resize": _resize, "Upsample": _resize, "Softmax": _softmax,
}


def supported_ops() -> list[str]:
    """The ONNX ops the importer accepts (Constant nodes aside)."""
    return sorted(OPS)


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
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedModelError(f"{path}: expected one input and one output, got {len(inputs)} and {len(graph.output)}")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
    if not dims or any(d <= 0 for d in dims):
        raise UnsupportedModelError(f"{path}: input {inputs[0].name!r} needs a fixed shape after the batch axis")
    meta = {p.key[len("keycam."):]: json.loads(p.value) for p in model.metadata_props if p.key.startswith("keycam.")}
    net = Network(tuple(dims), [], name=graph.name or path.stem, meta=meta)
    readers = Counter(name for node in graph.node for name in node.input)
    readers.update(o.name for o in graph.output)
    im = _Importer(net, consts, inputs[0].name, readers)
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = np.asarray(_constant_value(node))
            continue
        handler = OPS.get(node.op_type)
        if handler is None:
            raise UnsupportedModelError(f"{_where(node)} is not supported by keycam keying "
                                        f"(supported: {', '.join(supported_ops())})")
        handler(im, node, _attrs(node))
    out = im.index.get(graph.output[0].name)
    if not net.layers or out != len(net.layers) - 1:
        raise UnsupportedModelError(f"{path}: the graph output {graph.output[0].name!r} is not produced by the "
                                    "last supported node")
    _check_live(net, path)
    return net


def _check_live(net: Network, path: Path) -> None:
    """Every layer must lead to the output (a dead branch is an error, not silently dropped)."""
    live = {len(net.layers) - 1}
    for i in range(len(net.layers) - 1, -1, -1):
        if i in live:
            live.update(j for j in net.inputs_of(i) if j != INPUT)
    if len(live) != len(net.layers):
        dead = [net.layers[i].name for i in range(len(net.layers)) if i not in live]
        raise UnsupportedModelError(f"{path}: nodes {dead} do not lead to the graph output")


def _constant_value(node):
    from onnx import numpy_helper
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
    raise UnsupportedModelError(f"{_where(node)}: only tensor-valued Constant nodes are supported")
