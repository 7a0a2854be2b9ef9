"""A small sequential network IR shared by the ONNX importer, the keying and the TFLite writer.

Spatial tensors are (C, H, W) per sample (ONNX order); vectors are flattened in C, H, W order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

ACTIVATIONS = ("none", "relu", "leaky_relu")


@dataclass
class Conv:
    """2-D convolution, weight (O, I, kh, kw), explicit pads (top, left, bottom, right)."""
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    act: str = "none"
    alpha: float = 0.0


@dataclass
class AvgPool:
    kernel: tuple[int, int]
    stride: tuple[int, int]


@dataclass
class Dense:
    """y = W x + b on vectors; W is dense (ndarray) or sparse (scipy CSR)."""
    weight: np.ndarray | sp.csr_matrix
    bias: np.ndarray
    act: str = "none"
    alpha: float = 0.0

    @property
    def sparse(self) -> bool:
        return sp.issparse(self.weight)


@dataclass
class Flatten:
    """(C, H, W) -> vector in C, H, W order."""


@dataclass
class Unflatten:
    """vector in C, H, W order -> (C, H, W)."""
    shape: tuple[int, int, int]


@dataclass
class Activation:
    act: str
    alpha: float = 0.0


@dataclass
class Gather:
    """Rearrange the flattened input: out (logical C, H, W order) = x_flat[index], reshaped to `shape`."""
    index: np.ndarray
    shape: tuple[int, ...]


@dataclass
class Softmax:
    """Softmax over the output vector (only as the last layer)."""


Layer = Conv | AvgPool | Dense | Flatten | Unflatten | Gather | Activation | Softmax
LINEAR = (Conv, AvgPool, Dense)


@dataclass
class Network:
    input_shape: tuple[int, ...]          # (C, H, W) or (N,)
    layers: list = field(default_factory=list)
    name: str = "model"
    meta: dict = field(default_factory=dict)     # e.g. {"dataset": "fashion", "labels": [...]}

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer (input excluded)."""
        out, shape = [], tuple(self.input_shape)
        for layer in self.layers:
            shape = output_shape(layer, shape)
            out.append(shape)
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


def conv_output_hw(h: int, w: int, kernel, stride, pads) -> tuple[int, int]:
    kh, kw = kernel
    return ((h + pads[0] + pads[2] - kh) // stride[0] + 1, (w + pads[1] + pads[3] - kw) // stride[1] + 1)


def output_shape(layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after `layer` for an input of `shape`; raises ValueError on a mismatch."""
    if isinstance(layer, Conv):
        if len(shape) != 3 or shape[0] != layer.weight.shape[1]:
            raise ValueError(f"conv expects (C={layer.weight.shape[1]}, H, W) input, got {shape}")
        return (layer.weight.shape[0],) + conv_output_hw(shape[1], shape[2], layer.weight.shape[2:],
                                                         layer.stride, layer.pads)
    if isinstance(layer, AvgPool):
        if len(shape) != 3:
            raise ValueError(f"average pool expects (C, H, W) input, got {shape}")
        return (shape[0],) + conv_output_hw(shape[1], shape[2], layer.kernel, layer.stride, (0, 0, 0, 0))
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
    return shape


def activate(x: np.ndarray, act: str, alpha: float) -> np.ndarray:
    if act == "relu":
        return np.maximum(x, 0)
    if act == "leaky_relu":
        return np.where(x >= 0, x, alpha * x)
    return x


def conv_forward(x: np.ndarray, layer: Conv) -> np.ndarray:
    """Reference convolution on a batch (B, C, H, W)."""
    t, l, b, r = layer.pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    kh, kw = layer.weight.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::layer.stride[0], ::layer.stride[1]]
    y = np.tensordot(win, layer.weight, axes=([1, 4, 5], [1, 2, 3]))        # (B, Ho, Wo, O), one BLAS call
    return y.transpose(0, 3, 1, 2) + layer.bias[None, :, None, None]


def pool_forward(x: np.ndarray, layer: AvgPool) -> np.ndarray:
    win = np.lib.stride_tricks.sliding_window_view(x, layer.kernel, axis=(2, 3))
    return win[:, :, ::layer.stride[0], ::layer.stride[1]].mean(axis=(-2, -1))


def dense_forward(x: np.ndarray, layer: Dense) -> np.ndarray:
    w = layer.weight
    y = (w @ x.T).T if sp.issparse(w) else x @ w.T
    return np.asarray(y) + layer.bias


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(net: Network, x: np.ndarray, collect: bool = False):
    """Run the network in float64 on a batch shaped (B,) + input_shape (or flat (B, N)).

    Returns the output (B, K), or with collect=True the list of every layer's output.
    """
    x = np.asarray(x, dtype=np.float64).reshape((-1,) + tuple(net.input_shape))
    outs = []
    for layer in net.layers:
        if isinstance(layer, Conv):
            x = activate(conv_forward(x, layer), layer.act, layer.alpha)
        elif isinstance(layer, AvgPool):
            x = pool_forward(x, layer)
        elif isinstance(layer, Dense):
            x = activate(dense_forward(x, layer), layer.act, layer.alpha)
        elif isinstance(layer, Flatten):
            x = x.reshape(len(x), -1)
        elif isinstance(layer, Unflatten):
            x = x.reshape((len(x),) + tuple(layer.shape))
        elif isinstance(layer, Gather):
            x = x.reshape(len(x), -1)[:, layer.index].reshape((len(x),) + tuple(layer.shape))
        elif isinstance(layer, Activation):
            x = activate(x, layer.act, layer.alpha)
        elif isinstance(layer, Softmax):
            x = softmax(x)
        else:
            raise TypeError(f"unknown layer {type(layer).__name__}")
        outs.append(x)
    return outs if collect else x.reshape(len(x), -1)


def _window_pattern(in_hw: tuple[int, int], kernel, stride, pads) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Spatial index (iy * W + ix) read by every output position and kernel tap, and its validity.

    Returns (cols (Ho*Wo, kh*kw) int64, valid mask of the same shape, (Ho, Wo)); taps outside the
    input (padding) are invalid. Work and memory are O(Ho*Wo*kh*kw), independent of channels.
    """
    h, w = in_hw
    kh, kw = kernel
    ho, wo = conv_output_hw(h, w, kernel, stride, pads)
    iy = (np.arange(ho) * stride[0] - pads[0])[:, None, None, None] + np.arange(kh)[None, None, :, None]
    ix = (np.arange(wo) * stride[1] - pads[1])[None, :, None, None] + np.arange(kw)[None, None, None, :]
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
    """
    c, h, w = in_shape
    o, ci, kh, kw = layer.weight.shape
    if ci != c:
        raise ValueError(f"conv expects {ci} input channels, got {c}")
    cols, valid, (ho, wo) = _window_pattern((h, w), (kh, kw), layer.stride, layer.pads)
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
