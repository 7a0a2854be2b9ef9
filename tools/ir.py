"""The network IR shared by the ONNX importer, the keying and the TFLite writer: a DAG of typed layers.

A Network holds its layers in topological order; every layer names its inputs (`inputs`: indices of
earlier layers, INPUT for the network input; None = the previous layer, so sequential nets need no
wiring). The last layer is the output. Spatial tensors are (C, H, W) per sample (ONNX order); vectors
are flattened in C, H, W order. `forward` is the numpy reference (float32 unless asked otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

ACTIVATIONS = ("none", "relu", "leaky_relu")          # the ones a Conv / Dense may carry fused
INPUT = -1                                              # `inputs` entry naming the network input


@dataclass
class Node:
    """Wiring shared by every layer: its inputs (None = the previous layer) and its source node's name."""
    inputs: tuple[int, ...] | None = field(default=None, kw_only=True)
    name: str = field(default="", kw_only=True)


@dataclass
class Conv(Node):
    """2-D convolution, weight (O, I / groups, kh, kw), explicit pads (top, left, bottom, right)."""
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    act: str = "none"
    alpha: float = 0.0
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def depthwise(self) -> bool:
        """One input channel per group (TFLite DEPTHWISE_CONV_2D)."""
        return self.groups > 1 and self.weight.shape[1] == 1


@dataclass
class AvgPool(Node):
    kernel: tuple[int, int]
    stride: tuple[int, int]


@dataclass
class MaxPool(Node):
    """Max pooling; padded taps never win (they hold -inf)."""
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class Resize(Node):
    """Integer upsampling of (C, H, W): nearest (floor of the asymmetric source coordinate) or bilinear
    (half-pixel centres, edges clamped: torch align_corners=False)."""
    scale: tuple[int, int]
    mode: str = "nearest"


@dataclass
class Dense(Node):
    """y = W x + b on vectors; W is dense (ndarray) or sparse (scipy CSR)."""
    weight: np.ndarray | sp.csr_matrix
    bias: np.ndarray
    act: str = "none"
    alpha: float = 0.0

    @property
    def sparse(self) -> bool:
        return sp.issparse(self.weight)


@dataclass
class Flatten(Node):
    """(C, H, W) -> vector in C, H, W order."""


@dataclass
class Unflatten(Node):
    """vector in C, H, W order -> (C, H, W)."""
    shape: tuple[int, int, int]


@dataclass
class Activation(Node):
    """Elementwise: relu, leaky_relu (alpha), prelu (alpha per channel, or per unit of a vector),
    sigmoid, clip (to [lo, hi]; ReLU6 is clip 0..6)."""
    act: str
    alpha: float | np.ndarray = 0.0
    lo: float = 0.0
    hi: float = 6.0


@dataclass
class Add(Node):
    """Sum of tensors of one shape (a residual connection); `weights` makes it sum(w_i x_i) (e.g. (1, -1))."""
    weights: tuple[float, ...] | None = None


@dataclass
class Shift(Node):
    """x + offset, a constant of the input's shape (e.g. a per-position bias)."""
    offset: np.ndarray


@dataclass
class Concat(Node):
    """Concatenation along channels (axis 0 of (C, H, W) or of a vector)."""


@dataclass
class Gather(Node):
    """Rearrange the flattened input: out (logical C, H, W order) = x_flat[index], reshaped to `shape`."""
    index: np.ndarray
    shape: tuple[int, ...]


@dataclass
class Softmax(Node):
    """Softmax over the output vector (only as the last layer)."""


Layer = (Conv | AvgPool | MaxPool | Resize | Dense | Flatten | Unflatten | Gather | Activation | Add | Shift | Concat
         | Softmax)
LINEAR = (Conv, AvgPool, Dense)
MERGES = (Add, Concat)


@dataclass
class Network:
    input_shape: tuple[int, ...]          # (C, H, W) or (N,)
    layers: list = field(default_factory=list)
    name: str = "model"
    meta: dict = field(default_factory=dict)     # e.g. {"dataset": "fashion", "labels": [...]}

    def inputs_of(self, i: int) -> tuple[int, ...]:
        """Indices of the tensors layer i reads (INPUT: the network input)."""
        layer = self.layers[i]
        return tuple(layer.inputs) if layer.inputs is not None else (i - 1,)

    def consumers(self) -> dict[int, list[int]]:
        """For every tensor (INPUT and each layer), the layers that read it."""
        out: dict[int, list[int]] = {INPUT: [], **{i: [] for i in range(len(self.layers))}}
        for i in range(len(self.layers)):
            for j in self.inputs_of(i):
                out[j].append(i)
        return out

    @property
    def sequential(self) -> bool:
        return all(self.inputs_of(i) == (i - 1,) for i in range(len(self.layers)))

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer (input excluded); raises ValueError on bad wiring or shapes."""
        out: list[tuple[int, ...]] = []
        for i, layer in enumerate(self.layers):
            ins = self.inputs_of(i)
            if not ins or any(j < INPUT or j >= i for j in ins):
                raise ValueError(f"layer {i} ({type(layer).__name__}) reads {ins}: inputs must be earlier layers")
            shapes = [tuple(self.input_shape) if j == INPUT else out[j] for j in ins]
            out.append(output_shape(layer, *shapes))
        return out

    @property
    def output_size(self) -> int:
        return int(np.prod(self.shapes()[-1]))

    def parameter_count(self) -> int:
        count = 0
        for layer in self.layers:
            if isinstance(layer, (Conv, Dense)):
                w = layer.weight
                count += (w.nnz if sp.issparse(w) else w.size) + layer.bias.size
        return count


def conv_output_hw(h: int, w: int, kernel, stride, pads, dilation=(1, 1)) -> tuple[int, int]:
    kh, kw = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    return ((h + pads[0] + pads[2] - kh) // stride[0] + 1, (w + pads[1] + pads[3] - kw) // stride[1] + 1)


def _spatial(layer, shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{type(layer).__name__.lower()} expects (C, H, W) input, got {shape}")
    return shape


def output_shape(layer, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after `layer` for inputs of `shapes`; raises ValueError on a mismatch."""
    shape = shapes[0]
    if isinstance(layer, MERGES):
        if len(shapes) < 2:
            raise ValueError(f"{type(layer).__name__.lower()} needs at least two inputs")
        if isinstance(layer, Add):
            if len(set(shapes)) != 1:
                raise ValueError(f"add needs inputs of one shape, got {shapes}")
            if layer.weights is not None and len(layer.weights) != len(shapes):
                raise ValueError(f"add has {len(layer.weights)} weights for {len(shapes)} inputs")
            return shape
        if len({s[1:] for s in shapes}) != 1 or len({len(s) for s in shapes}) != 1:
            raise ValueError(f"concat needs inputs that differ only in channels, got {shapes}")
        return (sum(s[0] for s in shapes),) + tuple(shape[1:])
    if len(shapes) != 1:
        raise ValueError(f"{type(layer).__name__.lower()} takes one input, got {len(shapes)}")
    if isinstance(layer, Conv):
        c = _spatial(layer, shape)[0]
        if c != layer.weight.shape[1] * layer.groups or layer.weight.shape[0] % layer.groups:
            raise ValueError(f"conv expects (C={layer.weight.shape[1] * layer.groups}, H, W) input, got {shape}")
        return (layer.weight.shape[0],) + conv_output_hw(shape[1], shape[2], layer.weight.shape[2:],
                                                         layer.stride, layer.pads, layer.dilation)
    if isinstance(layer, (AvgPool, MaxPool)):
        _spatial(layer, shape)
        return (shape[0],) + conv_output_hw(shape[1], shape[2], layer.kernel, layer.stride,
                                            getattr(layer, "pads", (0, 0, 0, 0)))
    if isinstance(layer, Resize):
        c, h, w = _spatial(layer, shape)
        return (c, h * layer.scale[0], w * layer.scale[1])
    if isinstance(layer, Dense):
        if int(np.prod(shape)) != layer.weight.shape[1] or len(shape) != 1:
            raise ValueError(f"dense layer expects a vector of {layer.weight.shape[1]}, got {shape}")
        return (layer.weight.shape[0],)
    if isinstance(layer, Flatten):
        return (int(np.prod(shape)),)
    if isinstance(layer, Unflatten):
        if int(np.prod(shape)) != int(np.prod(layer.shape)):
            raise ValueError(f"cannot unflatten {shape} to {layer.shape}")
        return tuple(layer.shape)
    if isinstance(layer, Gather):
        if len(layer.index) != int(np.prod(layer.shape)) or layer.index.min() < 0 \
                or layer.index.max() >= int(np.prod(shape)):
            raise ValueError(f"gather of {len(layer.index)} elements into {layer.shape} does not fit input {shape}")
        return tuple(layer.shape)
    if isinstance(layer, Shift) and layer.offset.size != int(np.prod(shape)):
        raise ValueError(f"shift of {layer.offset.size} values does not fit input {shape}")
    if isinstance(layer, Activation) and layer.act == "prelu":
        slopes = np.size(layer.alpha)
        if slopes not in (1, shape[0]) and slopes != int(np.prod(shape)):
            raise ValueError(f"prelu has {slopes} slopes for input {shape}")
    return shape


def activate(x: np.ndarray, act: str, alpha=0.0, lo: float = 0.0, hi: float = 6.0) -> np.ndarray:
    """Elementwise activation on a batch (B,) + shape; prelu slopes broadcast over a channel's positions."""
    if act == "relu":
        return np.maximum(x, 0)
    if act == "leaky_relu":
        return np.where(x >= 0, x, x * np.asarray(alpha, dtype=x.dtype))
    if act == "prelu":
        a = np.asarray(alpha, dtype=x.dtype)
        a = a.reshape(x.shape[1:]) if a.size == np.prod(x.shape[1:]) else \
            a.reshape((-1,) + (1,) * (x.ndim - 2))
        return np.where(x >= 0, x, x * a)
    if act == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if act == "clip":
        return np.clip(x, lo, hi)
    if act == "none":
        return x
    raise ValueError(f"unknown activation {act!r}")


def conv_forward(x: np.ndarray, layer: Conv) -> np.ndarray:
    """Reference convolution on a batch (B, C, H, W) (groups and dilation included)."""
    t, l, b, r = layer.pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    kh, kw = layer.weight.shape[2:]
    dh, dw = layer.dilation
    win = np.lib.stride_tricks.sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::layer.stride[0], ::layer.stride[1], ::dh, ::dw]
    w = layer.weight.astype(x.dtype, copy=False)
    g = layer.groups
    if g == 1:
        y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))        # (B, Ho, Wo, O), one BLAS call
    else:
        bsz, c, ho, wo = win.shape[:4]
        wing = win.reshape(bsz, g, c // g, ho, wo, kh, kw)
        wg = w.reshape(g, -1, c // g, kh, kw)
        y = np.einsum("bgchwij,gocij->bhwgo", wing, wg, optimize=True).reshape(bsz, ho, wo, -1)
    return y.transpose(0, 3, 1, 2) + layer.bias.astype(x.dtype, copy=False)[None, :, None, None]


def expand_groups(layer: Conv) -> Conv:
    """A grouped conv as an ordinary one (zero weights between groups)."""
    o, ci, kh, kw = layer.weight.shape
    og, w = o // layer.groups, np.zeros((o, ci * layer.groups, kh, kw), dtype=layer.weight.dtype)
    for g in range(layer.groups):
        w[g * og:(g + 1) * og, g * ci:(g + 1) * ci] = layer.weight[g * og:(g + 1) * og]
    return Conv(w, layer.bias, layer.stride, layer.pads, layer.act, layer.alpha, layer.dilation,
                inputs=layer.inputs, name=layer.name)


def pool_forward(x: np.ndarray, layer: AvgPool) -> np.ndarray:
    win = np.lib.stride_tricks.sliding_window_view(x, layer.kernel, axis=(2, 3))
    return win[:, :, ::layer.stride[0], ::layer.stride[1]].mean(axis=(-2, -1))


def max_pool_forward(x: np.ndarray, layer: MaxPool) -> np.ndarray:
    t, l, b, r = layer.pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, layer.kernel, axis=(2, 3))
    return win[:, :, ::layer.stride[0], ::layer.stride[1]].max(axis=(-2, -1))


def resize_axis_matrix(n: int, scale: int, mode: str) -> np.ndarray:
    """(n * scale, n) interpolation matrix of one axis."""
    out = np.arange(n * scale)
    m = np.zeros((n * scale, n))
    if mode == "nearest":
        m[out, out // scale] = 1.0
        return m
    src = np.clip((out + 0.5) / scale - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    np.add.at(m, (out, lo), 1 - frac)
    np.add.at(m, (out, hi), frac)
    return m


def resize_forward(x: np.ndarray, layer: Resize) -> np.ndarray:
    ry = resize_axis_matrix(x.shape[2], layer.scale[0], layer.mode).astype(x.dtype)
    rx = resize_axis_matrix(x.shape[3], layer.scale[1], layer.mode).astype(x.dtype)
    return np.einsum("yh,bchw,xw->bcyx", ry, x, rx, optimize=True)


def dense_forward(x: np.ndarray, layer: Dense) -> np.ndarray:
    w = layer.weight
    if sp.issparse(w):              # in the matrix's dtype: a float32 matrix is never upcast (copied) whole
        y = (w @ x.T.astype(w.dtype, copy=False)).T
    else:
        y = x @ w.T.astype(x.dtype, copy=False)
    return np.asarray(y, dtype=x.dtype) + layer.bias.astype(x.dtype, copy=False)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layer_forward(layer, xs: list[np.ndarray]) -> np.ndarray:
    """One layer on batched inputs (B,) + shape."""
    x = xs[0]
    if isinstance(layer, Conv):
        return activate(conv_forward(x, layer), layer.act, layer.alpha)
    if isinstance(layer, AvgPool):
        return pool_forward(x, layer)
    if isinstance(layer, MaxPool):
        return max_pool_forward(x, layer)
    if isinstance(layer, Resize):
        return resize_forward(x, layer)
    if isinstance(layer, Dense):
        return activate(dense_forward(x, layer), layer.act, layer.alpha)
    if isinstance(layer, Flatten):
        return x.reshape(len(x), -1)
    if isinstance(layer, Unflatten):
        return x.reshape((len(x),) + tuple(layer.shape))
    if isinstance(layer, Gather):
        return x.reshape(len(x), -1)[:, layer.index].reshape((len(x),) + tuple(layer.shape))
    if isinstance(layer, Activation):
        return activate(x, layer.act, layer.alpha, layer.lo, layer.hi)
    if isinstance(layer, Add):
        weights = layer.weights or (1.0,) * len(xs)
        return sum((w * v for w, v in zip(weights[1:], xs[1:])), weights[0] * xs[0])
    if isinstance(layer, Shift):
        return x + layer.offset.reshape(x.shape[1:]).astype(x.dtype, copy=False)
    if isinstance(layer, Concat):
        return np.concatenate(xs, axis=1)
    if isinstance(layer, Softmax):
        return softmax(x)
    raise TypeError(f"unknown layer {type(layer).__name__}")


def forward(net: Network, x: np.ndarray, collect: bool = False, dtype=np.float64, observe=None):
    """Run the network on a batch shaped (B,) + input_shape (or flat (B, N)), in `dtype`.

    Returns the output (B, K), or with collect=True the list of every layer's output. Tensors are
    dropped once their last reader has run (collect keeps them all); `observe(i, output)` sees each
    layer's output as it is computed.
    """
    x = np.asarray(x, dtype=dtype).reshape((-1,) + tuple(net.input_shape))
    readers = {j: len(r) for j, r in net.consumers().items()}
    values: dict[int, np.ndarray] = {INPUT: x}
    outs = []
    for i, layer in enumerate(net.layers):
        ins = net.inputs_of(i)
        values[i] = layer_forward(layer, [values[j] for j in ins])
        if observe is not None:
            observe(i, values[i])
        if collect:
            outs.append(values[i])
        for j in ins:
            readers[j] -= 1
            if readers[j] == 0 and j != len(net.layers) - 1:
                del values[j]
    return outs if collect else values[len(net.layers) - 1].reshape(len(x), -1)


def _window_pattern(in_hw: tuple[int, int], kernel, stride, pads,
                    dilation=(1, 1)) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Spatial index (iy * W + ix) read by every output position and kernel tap, and its validity.

    Returns (cols (Ho*Wo, kh*kw) int64, valid mask of the same shape, (Ho, Wo)); taps outside the
    input (padding) are invalid. Work and memory are O(Ho*Wo*kh*kw), independent of channels.
    """
    h, w = in_hw
    kh, kw = kernel
    ho, wo = conv_output_hw(h, w, kernel, stride, pads, dilation)
    iy = (np.arange(ho) * stride[0] - pads[0])[:, None, None, None] + dilation[0] * np.arange(kh)[None, None, :, None]
    ix = (np.arange(wo) * stride[1] - pads[1])[None, :, None, None] + dilation[1] * np.arange(kw)[None, None, None, :]
    iy, ix = np.broadcast_arrays(iy, ix)
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    cols = np.where(valid, iy * w + ix, 0)
    return cols.reshape(ho * wo, kh * kw), valid.reshape(ho * wo, kh * kw), (ho, wo)


def _csr_from_pattern(cols: np.ndarray, valid: np.ndarray, values: np.ndarray, shape: tuple[int, int],
                      dtype) -> sp.csr_matrix:
    """CSR whose row (o, p) holds values[o, t] at column cols[p, t] for every valid tap t.

    cols/valid: (P, T) with columns increasing along T; values: (O, T). Rows are o-major, so the
    whole matrix is built with a few vectorised array operations and no COO intermediate.
    """
    o = values.shape[0]
    taps = np.nonzero(valid)
    per_row = valid.sum(axis=1)
    indptr = np.zeros(o * len(per_row) + 1, dtype=np.int64)
    np.cumsum(np.tile(per_row, o), out=indptr[1:])
    index_type = np.int32 if max(shape) < 2 ** 31 else np.int64
    indices = np.tile(cols[taps].astype(index_type), o)
    data = np.asarray(values, dtype=dtype)[:, taps[1]].reshape(-1)
    m = sp.csr_matrix((data, indices, indptr), shape=shape)
    m.has_sorted_indices = True
    return m


def conv_matrix(layer: Conv, in_shape: tuple[int, int, int], dtype=np.float64) -> sp.csr_matrix:
    """The convolution as a sparse (O*Ho*Wo, C*H*W) Toeplitz matrix (CHW order on both sides).

    Zero-padding taps are left out; explicit zero weights are kept (the pattern is the conv's).
    A grouped conv is the block diagonal of its groups' matrices (channels of a group are contiguous).
    """
    c, h, w = in_shape
    o, ci, kh, kw = layer.weight.shape
    if ci * layer.groups != c:
        raise ValueError(f"conv expects {ci * layer.groups} input channels, got {c}")
    if layer.groups > 1:
        og = o // layer.groups
        parts = [conv_matrix(Conv(layer.weight[g * og:(g + 1) * og], layer.bias[g * og:(g + 1) * og], layer.stride,
                                  layer.pads, dilation=layer.dilation), (ci, h, w), dtype)
                 for g in range(layer.groups)]
        return sp.block_diag(parts, format="csr")
    cols, valid, (ho, wo) = _window_pattern((h, w), (kh, kw), layer.stride, layer.pads, layer.dilation)
    # taps ordered (c, i, j): the column (c*H + iy)*W + ix then increases along each row
    cols = (np.arange(c)[None, :, None] * (h * w) + cols[:, None, :]).reshape(ho * wo, c * kh * kw)
    valid = np.broadcast_to(valid[:, None, :], (ho * wo, c, kh * kw)).reshape(ho * wo, c * kh * kw)
    return _csr_from_pattern(cols, valid, layer.weight.reshape(o, -1), (o * ho * wo, c * h * w), dtype)


def pool_matrix(layer: AvgPool, in_shape: tuple[int, int, int], dtype=np.float64) -> sp.csr_matrix:
    """Average pooling as a sparse matrix (CHW order): one block per channel, no cross-channel zeros."""
    c, h, w = in_shape
    cols, valid, (ho, wo) = _window_pattern((h, w), layer.kernel, layer.stride, (0, 0, 0, 0))
    block = _csr_from_pattern(cols, valid, np.full((1, cols.shape[1]), 1.0 / cols.shape[1]), (ho * wo, h * w), dtype)
    return sp.block_diag([block] * c, format="csr")


def resize_matrix(layer: Resize, in_shape: tuple[int, int, int], dtype=np.float64) -> sp.csr_matrix:
    """Resizing as a sparse matrix (CHW order): per channel the Kronecker product of the axis matrices."""
    c, h, w = in_shape
    block = sp.kron(sp.csr_matrix(resize_axis_matrix(h, layer.scale[0], layer.mode)),
                    sp.csr_matrix(resize_axis_matrix(w, layer.scale[1], layer.mode)), format="csr").astype(dtype)
    block.eliminate_zeros()
    return sp.block_diag([block] * c, format="csr")
