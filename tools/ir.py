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
class Softmax:
    """Softmax over the output vector (only as the last layer)."""


Layer = Conv | AvgPool | Dense | Flatten | Unflatten | Activation | Softmax
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
    return np.einsum("bchwij,ocij->bohw", win, layer.weight, optimize=True) + layer.bias[None, :, None, None]


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
        elif isinstance(layer, Activation):
            x = activate(x, layer.act, layer.alpha)
        elif isinstance(layer, Softmax):
            x = softmax(x)
        else:
            raise TypeError(f"unknown layer {type(layer).__name__}")
        outs.append(x)
    return outs if collect else x.reshape(len(x), -1)


def conv_matrix(layer: Conv, in_shape: tuple[int, int, int]) -> sp.csr_matrix:
    """The convolution as a sparse (O*Ho*Wo, C*H*W) Toeplitz matrix (CHW order on both sides)."""
    c, h, w = in_shape
    o, _, kh, kw = layer.weight.shape
    ho, wo = conv_output_hw(h, w, (kh, kw), layer.stride, layer.pads)
    oo, yy, xx, cc, ii, jj = np.meshgrid(np.arange(o), np.arange(ho), np.arange(wo), np.arange(c),
                                         np.arange(kh), np.arange(kw), indexing="ij")
    iy = yy * layer.stride[0] - layer.pads[0] + ii
    ix = xx * layer.stride[1] - layer.pads[1] + jj
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = ((oo * ho + yy) * wo + xx)[ok]
    cols = ((cc * h + iy) * w + ix)[ok]
    vals = layer.weight[oo[ok], cc[ok], ii[ok], jj[ok]]
    return sp.csr_matrix((vals, (rows, cols)), shape=(o * ho * wo, c * h * w))


def pool_matrix(layer: AvgPool, in_shape: tuple[int, int, int]) -> sp.csr_matrix:
    """Average pooling as a sparse matrix (CHW order)."""
    c = in_shape[0]
    kh, kw = layer.kernel
    eye = np.zeros((c, c, kh, kw))
    eye[np.arange(c), np.arange(c)] = 1.0 / (kh * kw)
    return conv_matrix(Conv(eye, np.zeros(c), layer.stride), in_shape)
