"""Lower a keycam IR network to a .tflite model with builtin ops, float32 or int8.

int8: post-training quantisation calibrated on (keyed) frames: activations asymmetric per tensor,
weights symmetric per output channel, int32 biases. Sparse layers whose pattern is made of 1x16
blocks become int8 block-sparse FULLY_CONNECTED with one weight scale per tensor (the sparse kernel
has no per-channel path; tflite-runtime 2.14 returns zeros with per-channel scales). Other sparse
layers have no int8 kernel in the runtime: they stay float32 CSR between DEQUANTIZE/QUANTIZE,
and the report lists them, unless the caller asks for `sparse_ell`: then they become int8 GATHER +
DEPTHWISE_CONV_2D in ELL form (tools.tflite.sparse_int8; cheap when rows have few non-zeros, e.g. a
sensor key's inverse). Sparse layers are written as CSR FULLY_CONNECTED with op version 8 (with
version 1 the XNNPACK delegate claims them and returns wrong results).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from ai_edge_litert import schema_py_generated as fb

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
    Gather,
    MaxPool,
    Network,
    Resize,
    Shift,
    Softmax,
    Unflatten,
    expand_groups,
    forward,
)
from tools.tflite.builder import GraphBuilder, builtin_options, quant_params

INPUT_QUANT = (1.0 / 255.0, -128)     # uint8 ADC counts c map exactly to int8 c - 128
SOFTMAX_QUANT = (1.0 / 256.0, -128)
LOGISTIC_QUANT = (1.0 / 256.0, -128)  # TFLite's fixed int8 LOGISTIC output parameters
SPARSE_FC_VERSION = 8
CALIBRATION_BATCH = 64
BLOCK = 16                   # the only sparse block shape with an int8 FULLY_CONNECTED kernel
_ACT_CODES = {"none": fb.ActivationFunctionType.NONE, "relu": fb.ActivationFunctionType.RELU,
              "relu6": fb.ActivationFunctionType.RELU6}


@dataclass
class _Act:
    """The current activation tensor while lowering."""
    index: int
    shape: tuple[int, ...]                 # logical shape: (C, H, W) or (N,)
    lo: float
    hi: float
    quant: tuple[float, int] | None        # None: float32
    order: np.ndarray | None = None        # vectors: logical (CHW) index of each stored element


def hwc_to_chw_order(shape: tuple[int, int, int]) -> np.ndarray:
    """order[j] = CHW index of the j-th element of the same tensor stored in HWC order."""
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def act_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 parameters covering [lo, hi] (always including 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    return scale, int(np.clip(np.round(-128 - lo / scale), -128, 127))


def const_quant(values: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
    """A constant activation-like tensor as int8 on its own range: (codes, (scale, zero point))."""
    quant = act_quant(float(values.min()), float(values.max()))
    return np.clip(np.round(values / quant[0]) + quant[1], -128, 127).astype(np.int8), quant


def weight_quant(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 weights (axis 0) and their scales."""
    flat = np.abs(w.reshape(len(w), -1)).max(axis=1)
    scale = np.maximum(flat, 1e-12) / 127.0
    q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, scale


class _Lowering:
    def __init__(self, net: Network, int8: bool, ranges: list[tuple[float, float]], sparse_ell: bool = False,
                 release: bool = False):
        self.net, self.int8, self.ranges, self.sparse_ell, self.release = net, int8, ranges, sparse_ell, release
        self.g = GraphBuilder()
        self.report: list[dict] = []
        self.shapes = net.shapes()

    # -- tensor helpers -------------------------------------------------------------------
    def _new(self, name, shape, quant, lo, hi, lshape, order=None) -> _Act:
        dtype = np.int8 if quant else np.float32
        q = quant_params(*quant) if quant else None
        return _Act(self.g.tensor(name, shape, dtype, quant=q), lshape, lo, hi, quant, order)

    def _float(self, cur: _Act, name: str) -> _Act:
        if cur.quant is None:
            return cur
        out = self._new(f"{name}/dequant", self.g.tensors[cur.index].shape, None, cur.lo, cur.hi, cur.shape, cur.order)
        self.g.op(fb.BuiltinOperator.DEQUANTIZE, [cur.index], [out.index])
        return out

    def _quantized(self, cur: _Act, name: str) -> _Act:
        if cur.quant is not None:
            return cur
        out = self._new(f"{name}/quant", self.g.tensors[cur.index].shape, act_quant(cur.lo, cur.hi),
                        cur.lo, cur.hi, cur.shape, cur.order)
        self.g.op(fb.BuiltinOperator.QUANTIZE, [cur.index], [out.index])
        return out

    def _reshape(self, cur: _Act, shape: list[int], lshape, order, name) -> _Act:
        out = self._new(name, shape, cur.quant, cur.lo, cur.hi, lshape, order)
        self.g.reshape(cur.index, out.index, shape, name)
        return out

    def _note(self, i: int, op: str, dtype: str, why: str = "") -> None:
        self.report.append({"layer": i, "op": op, "dtype": dtype, **({"why": why} if why else {})})

    # -- layers ---------------------------------------------------------------------------
    def run(self) -> tuple[int, int]:
        shape = tuple(self.net.input_shape)
        tshape = [1, shape[1], shape[2], shape[0]] if len(shape) == 3 else [1, shape[0]]
        cur = self._new("input", tshape, INPUT_QUANT if self.int8 else None, 0.0, 1.0, shape)
        first = cur.index
        layers = self.net.layers
        self.acts = acts = {INPUT: cur}
        self.consumers = consumers = self.net.consumers()
        saturating = self._saturating_clips(consumers) if self.int8 else set()
        self.relu6_into = {self.net.inputs_of(i)[0]: i for i in self._fusable_relu6(consumers)}
        for i, layer in enumerate(layers):
            lo, hi = self.ranges[i] if self.ranges else (0.0, 1.0)
            if i in self.relu6_into and self.ranges:
                lo, hi = self.ranges[self.relu6_into[i]]
            readers = [layers[k] for k in consumers[i]]
            ins = [acts[j] for j in self.net.inputs_of(i)]
            if i in saturating:                 # the producer's int8 output saturates onto [lo, hi]
                acts[i] = ins[0]
                self._note(i, f"clip to [{layer.lo:g}, {layer.hi:g}] as saturation of the int8 output", "int8")
                continue
            if self.net.inputs_of(i)[0] in self.relu6_into and self.relu6_into[self.net.inputs_of(i)[0]] == i:
                acts[i] = ins[0]                # fused into the conv before it
                continue
            cur = ins[0]
            name = f"l{i}_{type(layer).__name__.lower()}"
            if isinstance(layer, Conv):
                cur = self._conv(cur, layer, i, name, lo, hi)
            elif isinstance(layer, AvgPool):
                cur = self._pool(cur, layer, i, name)
            elif isinstance(layer, MaxPool):
                cur = self._max_pool(cur, layer, i, name)
            elif isinstance(layer, Resize):
                cur = self._resize(cur, layer, i, name)
            elif isinstance(layer, Dense):
                cur = self._dense(cur, layer, i, name, lo, hi, consumers[i])
            elif isinstance(layer, Flatten):
                if len(cur.shape) == 3:
                    cur = self._reshape(cur, [1, int(np.prod(cur.shape))], (int(np.prod(cur.shape)),),
                                        hwc_to_chw_order(cur.shape), name)
            elif isinstance(layer, Unflatten):
                cur = self._unflatten(cur, layer, name)
            elif isinstance(layer, Gather):
                cur = self._gather(cur, layer, i, name)
            elif isinstance(layer, Activation):
                cur = self._activation(cur, layer, i, name, lo, hi)
            elif isinstance(layer, Add):
                cur = self._add(ins, layer.weights or (1.0,) * len(ins), i, name, lo, hi)
            elif isinstance(layer, Shift):
                cur = self._shift(cur, layer, i, name, lo, hi)
            elif isinstance(layer, Concat):
                cur = self._concat(ins, i, name, lo, hi)
            elif isinstance(layer, Softmax):
                cur = self._softmax(cur, i, name)
            else:
                raise ModelError(f"layer {i}: {type(layer).__name__} cannot be written to TFLite")
            if self.int8 and cur.quant is None and readers and \
                    not all(isinstance(r, Dense) and r.sparse for r in readers):
                cur = self._quantized(cur, name)     # leave a float island as early as possible
            acts[i] = cur
            if self.release and isinstance(layer, (Conv, Dense)):
                layer.weight = None             # its values live in the model's buffers now
        return first, acts[len(layers) - 1].index

    def _fusable_relu6(self, consumers: dict[int, list[int]]) -> list[int]:
        """ReLU6 layers (clip 0..6) right after a Conv or Dense without activation that nothing else reads:
        written as its fused RELU6 (its output quantised on the clipped range)."""
        out = []
        for i, layer in enumerate(self.net.layers):
            j = self.net.inputs_of(i)[0]
            if isinstance(layer, Activation) and layer.act == "clip" and (layer.lo, layer.hi) == (0.0, 6.0) and \
                    j != INPUT and isinstance(self.net.layers[j], (Conv, Dense)) and self.net.layers[j].act == "none" \
                    and consumers[j] == [i]:
                out.append(i)
        return out

    def _saturating_clips(self, consumers: dict[int, list[int]]) -> set[int]:
        """Clips whose input comes from an ADD (Add, Shift) read by nothing else: their int8 output is quantised
        on exactly [lo, hi] instead (the ADD saturates, as the clamp would)."""
        out = set()
        for i, layer in enumerate(self.net.layers):
            j = self.net.inputs_of(i)[0]
            if isinstance(layer, Activation) and layer.act == "clip" and j != INPUT and \
                    isinstance(self.net.layers[j], (Add, Shift)) and consumers[j] == [i]:
                self.ranges[j] = (layer.lo, layer.hi)
                out.add(i)
        return out

    def _shift(self, cur: _Act, layer: Shift, i, name, lo, hi) -> _Act:
        """x + offset as ADD of a constant in the tensor's stored layout (int8 on its own range)."""
        if len(cur.shape) == 3:
            values, shape = layer.offset.reshape(cur.shape).transpose(1, 2, 0), [1, cur.shape[1], cur.shape[2],
                                                                                   cur.shape[0]]
        else:
            flat = layer.offset.reshape(-1)
            values, shape = (flat[cur.order] if cur.order is not None else flat), [1, flat.size]
        values = np.ascontiguousarray(values).reshape(shape)
        cur = self._quantized(cur, name) if self.int8 else self._float(cur, name)
        if self.int8:
            q, quant = const_quant(values)
            const = self.g.tensor(f"{name}/offset", shape, np.int8, q, quant_params(*quant))
        else:
            const = self.g.tensor(f"{name}/offset", shape, np.float32, values)
        out = self._new(name, shape, act_quant(lo, hi) if self.int8 else None, lo, hi, cur.shape, cur.order)
        self.g.op(fb.BuiltinOperator.ADD, [cur.index, const], [out.index], *builtin_options(fb.BuiltinOperator.ADD),
                  version=2 if self.int8 else 1)
        self._note(i, "ADD (constant)", "int8" if self.int8 else "float32")
        return out

    def _unflatten(self, cur: _Act, layer: Unflatten, name: str) -> _Act:
        """A vector back to NHWC: a RESHAPE when it is stored in HWC order, else RESHAPE to NCHW + TRANSPOSE."""
        c, h, w = layer.shape
        if cur.order is not None and np.array_equal(cur.order, hwc_to_chw_order(layer.shape)):
            return self._reshape(cur, [1, h, w, c], tuple(layer.shape), None, name)
        if cur.order is not None and not np.array_equal(cur.order, np.arange(len(cur.order))):
            raise ModelError(f"{name}: cannot unflatten a vector stored in a permuted order")
        nchw = self._reshape(cur, [1, c, h, w], tuple(layer.shape), None, f"{name}/nchw")
        out = self._new(name, [1, h, w, c], cur.quant, cur.lo, cur.hi, tuple(layer.shape))
        perm = self.g.tensor(f"{name}/perm", [4], np.int32, np.array([0, 2, 3, 1], np.int32))
        self.g.op(fb.BuiltinOperator.TRANSPOSE, [nchw.index, perm], [out.index],
                  *builtin_options(fb.BuiltinOperator.TRANSPOSE), version=2 if cur.quant else 1)
        return out

    def _same_quant(self, cur: _Act, quant, name: str) -> _Act:
        """`cur` requantised (int8 -> int8 QUANTIZE) to `quant` unless it already has it."""
        if cur.quant == quant:
            return cur
        out = self._new(f"{name}/requant", self.g.tensors[cur.index].shape, quant, cur.lo, cur.hi, cur.shape,
                        cur.order)
        self.g.op(fb.BuiltinOperator.QUANTIZE, [cur.index], [out.index], version=2)
        return out

    def _merge_inputs(self, ins: list[_Act], name: str) -> tuple[list[_Act], bool]:
        """Inputs of an ADD / CONCATENATION in one dtype (int8 unless the writer is float); vectors must be
        stored in their logical order or all in one order."""
        ins = [self._quantized(a, name) if self.int8 else self._float(a, name) for a in ins]
        return ins, bool(self.int8)

    def _add(self, ins: list[_Act], weights, i, name, lo, hi) -> _Act:
        """sum(w_k x_k): ADD, SUB for a second input of weight -1, MUL by a constant for other weights."""
        ins, q = self._merge_inputs(ins, name)
        orders = [a.order for a in ins]
        if any(o is not None for o in orders) and not all(o is not None and np.array_equal(o, orders[0])
                                                          for o in orders):
            raise ModelError(f"layer {i}: add of vectors stored in different orders")
        terms = []
        for k, (a, w) in enumerate(zip(ins, weights)):
            if w == 1.0 or (w == -1.0 and k > 0):
                terms.append((a, w))
            else:
                terms.append((self._scaled(a, w, f"{name}/w{k}"), 1.0))
        cur, labels = terms[0][0], ["MUL"] * sum(w not in (1.0, -1.0) for w in weights)
        for k, (other, sign) in enumerate(terms[1:]):
            code = fb.BuiltinOperator.SUB if sign < 0 else fb.BuiltinOperator.ADD
            out = self._new(f"{name}/{k}" if k < len(terms) - 2 else name, self.g.tensors[cur.index].shape,
                            act_quant(lo, hi) if q else None, lo, hi, cur.shape, cur.order)
            self.g.op(code, [cur.index, other.index], [out.index], *builtin_options(code), version=2 if q else 1)
            labels.append("SUB" if sign < 0 else "ADD")
            cur = out
        self._note(i, "+".join(labels), "int8" if q else "float32")
        return cur

    def _scaled(self, cur: _Act, weight: float, name: str) -> _Act:
        """MUL by a scalar constant (int8: the constant is +-127 on scale |w| / 127)."""
        lo, hi = sorted((weight * cur.lo, weight * cur.hi))
        if cur.quant:
            quant = (max(abs(weight), 1e-6) / 127.0, 0)
            const = self.g.tensor(f"{name}/c", [1], np.int8, np.array([round(weight / quant[0])], np.int8),
                                  quant_params(*quant))
        else:
            const = self.g.tensor(f"{name}/c", [1], np.float32, np.array([weight], np.float32))
        out = self._new(name, self.g.tensors[cur.index].shape, act_quant(lo, hi) if cur.quant else None, lo, hi,
                        cur.shape, cur.order)
        self.g.op(fb.BuiltinOperator.MUL, [cur.index, const], [out.index], *builtin_options(fb.BuiltinOperator.MUL),
                  version=2 if cur.quant else 1)
        return out

    def _concat(self, ins: list[_Act], i, name, lo, hi) -> _Act:
        ins, q = self._merge_inputs(ins, name)
        quant = act_quant(lo, hi) if q else None
        if q:                                   # the int8 kernel copies bytes: one scale for all
            ins = [self._same_quant(a, quant, f"{name}/in{k}") for k, a in enumerate(ins)]
        shape = self.shapes[i]
        if len(shape) == 3:
            tshape, axis, order = [1, shape[1], shape[2], shape[0]], 3, None
        else:
            tshape, axis = [1, shape[0]], 1
            parts, offset = [], 0
            for a in ins:
                parts.append((a.order if a.order is not None else np.arange(a.shape[0])) + offset)
                offset += a.shape[0]
            order = np.concatenate(parts)
            order = None if np.array_equal(order, np.arange(len(order))) else order
        out = self._new(name, tshape, quant, lo, hi, shape, order)
        self.g.op(fb.BuiltinOperator.CONCATENATION, [a.index for a in ins], [out.index],
                  *builtin_options(fb.BuiltinOperator.CONCATENATION, axis=axis), version=2 if q else 1)
        self._note(i, "CONCATENATION", "int8" if q else "float32")
        return out

    def _max_pool(self, cur: _Act, layer: MaxPool, i, name) -> _Act:
        c, h, w = cur.shape
        padding = _padding(layer.kernel, layer.stride, layer.pads, h, w)
        if padding is None:             # asymmetric to SAME: pad with the lowest value, which never wins
            lowest = -128 if cur.quant else np.finfo(np.float32).min
            cur = self._pad(cur, layer.pads, name, lowest)
            padding = fb.Padding.VALID
        return self._pool2d(cur, layer, i, name, "MAX_POOL_2D", padding)

    def _resize(self, cur: _Act, layer: Resize, i, name) -> _Act:
        out_shape = self.shapes[i]
        size = self.g.tensor(f"{name}/size", [2], np.int32, np.array(out_shape[1:], np.int32))
        out = self._new(name, [1, out_shape[1], out_shape[2], out_shape[0]], cur.quant, cur.lo, cur.hi, out_shape)
        if layer.mode == "bilinear":
            code, fields, version = fb.BuiltinOperator.RESIZE_BILINEAR, {"halfPixelCenters": True}, 3
        else:
            code, fields, version = fb.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR, {}, 2 if cur.quant else 1
        self.g.op(code, [cur.index, size], [out.index], *builtin_options(code, **fields), version=version)
        self._note(i, "RESIZE_BILINEAR" if layer.mode == "bilinear" else "RESIZE_NEAREST_NEIGHBOR",
                   "int8" if cur.quant else "float32")
        return out

    def _conv(self, cur: _Act, layer: Conv, i, name, lo, hi) -> _Act:
        """CONV_2D, or DEPTHWISE_CONV_2D for a depthwise conv (other grouped convs are expanded to CONV_2D)."""
        if layer.groups > 1 and not layer.depthwise:
            layer = expand_groups(layer)
        c, h, w = cur.shape
        o, _, kh, kw = layer.weight.shape
        padding = _padding(layer.weight.shape[2:], layer.stride, layer.pads, h, w, layer.dilation)
        if padding is None:                     # asymmetric to TFLite's SAME: an explicit PAD, then VALID
            cur = self._pad(self._quantized(cur, name) if self.int8 else self._float(cur, name), layer.pads, name)
            padding = fb.Padding.VALID
        out_shape = self.shapes[i]
        fused = "relu6" if i in self.relu6_into else layer.act if layer.act in _ACT_CODES else "none"
        plo, phi = _pre_activation_range(layer, lo, hi)
        # CONV_2D filters are OHWI with per-channel scales on axis 0; DEPTHWISE_CONV_2D filters are 1HWO, axis 3
        axis = 3 if layer.depthwise else 0
        w_t = layer.weight.transpose(1, 2, 3, 0) if layer.depthwise else layer.weight.transpose(0, 2, 3, 1)
        if self.int8:
            cur = self._quantized(cur, name)
            qw, ws = weight_quant(layer.weight)
            qw = qw.transpose(1, 2, 3, 0) if layer.depthwise else qw.transpose(0, 2, 3, 1)
            wt = self.g.tensor(f"{name}/w", w_t.shape, np.int8, qw, quant_params(ws, np.zeros(o, int), axis))
            bs = cur.quant[0] * ws
            bt = self.g.tensor(f"{name}/b", [o], np.int32, np.round(layer.bias / bs).astype(np.int32),
                               quant_params(bs, np.zeros(o, int), 0))
            out = self._new(name, [1, out_shape[1], out_shape[2], o], act_quant(plo if fused == "none" else lo,
                            phi if fused == "none" else hi), plo, phi, out_shape)
        else:
            cur = self._float(cur, name)
            wt = self.g.tensor(f"{name}/w", w_t.shape, np.float32, w_t)
            bt = self.g.tensor(f"{name}/b", [o], np.float32, layer.bias)
            out = self._new(name, [1, out_shape[1], out_shape[2], o], None, plo, phi, out_shape)
        if layer.depthwise:
            opts, code, kind = fb.DepthwiseConv2DOptionsT(), fb.BuiltinOperator.DEPTHWISE_CONV_2D, \
                fb.BuiltinOptions.DepthwiseConv2DOptions
            opts.depthMultiplier = o // c
        else:
            opts, code, kind = fb.Conv2DOptionsT(), fb.BuiltinOperator.CONV_2D, fb.BuiltinOptions.Conv2DOptions
        opts.padding, opts.strideH, opts.strideW = padding, layer.stride[0], layer.stride[1]
        opts.dilationHFactor, opts.dilationWFactor = layer.dilation
        opts.fusedActivationFunction = _ACT_CODES[fused]
        self.g.op(code, [cur.index, wt, bt], [out.index], kind, opts, version=3 if self.int8 else 1)
        self._note(i, ("DEPTHWISE_CONV_2D" if layer.depthwise else "CONV_2D") + (" + RELU6" if fused == "relu6" else ""),
                   "int8" if self.int8 else "float32")
        out.lo, out.hi = (lo, hi) if fused != "none" else (plo, phi)
        if layer.act == "leaky_relu":
            out = self._activation(out, Activation("leaky_relu", layer.alpha), i, f"{name}/act", lo, hi)
        return out

    def _gather(self, cur: _Act, layer: Gather, i, name) -> _Act:
        """GATHER on the stored vector, moving runs of contiguous elements as rows; a (C, H, W) result
        is gathered straight into NHWC order."""
        if len(cur.shape) != 1:
            raise ModelError(f"layer {i}: gather needs a vector input, got {cur.shape}")
        stored = np.arange(cur.shape[0]) if cur.order is None else np.argsort(cur.order)
        src = stored[np.asarray(layer.index, dtype=np.int64)]         # stored position of each logical source
        if len(layer.shape) == 3:
            src, tshape = src[hwc_to_chw_order(layer.shape)], [1, layer.shape[1], layer.shape[2], layer.shape[0]]
        else:
            tshape = [1, len(src)]
        run = _run_length(src, cur.shape[0])
        rows = self._reshape(cur, [1, cur.shape[0] // run, run], cur.shape, cur.order, f"{name}/rows")
        gathered = self._new(f"{name}/gathered", [1, len(src) // run, run], cur.quant, cur.lo, cur.hi, cur.shape)
        it = self.g.tensor(f"{name}/indices", [len(src) // run], np.int32, (src[::run] // run).astype(np.int32))
        self.g.op(fb.BuiltinOperator.GATHER, [rows.index, it], [gathered.index],
                  *builtin_options(fb.BuiltinOperator.GATHER, axis=1), version=2 if cur.quant else 1)
        self._note(i, f"GATHER ({len(src) // run:,} rows of {run})", "int8" if cur.quant else "float32")
        return self._reshape(gathered, tshape, tuple(layer.shape), None, name)

    def _pad(self, cur: _Act, pads: tuple[int, int, int, int], name: str, fill: float | None = None) -> _Act:
        """Padding (top, left, bottom, right) of an NHWC tensor: zeros (int8: the zero point), or `fill` (a
        float, or an int8 code) with PADV2."""
        c, h, w = cur.shape
        t, l, b, r = pads
        shape = (c, h + t + b, w + l + r)
        out = self._new(f"{name}/pad", [1, shape[1], shape[2], c], cur.quant, cur.lo, cur.hi, shape)
        amounts = self.g.tensor(f"{name}/pads", [4, 2], np.int32, np.array([[0, 0], [t, b], [l, r], [0, 0]], np.int32))
        if fill is None:
            self.g.op(fb.BuiltinOperator.PAD, [cur.index, amounts], [out.index], version=2 if cur.quant else 1)
            return out
        value = self.g.tensor(f"{name}/fill", [], np.int8 if cur.quant else np.float32,
                              np.array(fill, np.int8 if cur.quant else np.float32),
                              quant_params(*cur.quant) if cur.quant else None)
        self.g.op(fb.BuiltinOperator.PADV2, [cur.index, amounts, value], [out.index],
                  *builtin_options(fb.BuiltinOperator.PADV2), version=2 if cur.quant else 1)
        return out

    def _pool(self, cur: _Act, layer: AvgPool, i, name) -> _Act:
        """AVERAGE_POOL_2D, or MEAN over both spatial axes when the window is the whole input (global)."""
        out_shape = self.shapes[i]
        if tuple(layer.kernel) == tuple(cur.shape[1:]):
            out = self._new(name, [1, 1, 1, out_shape[0]], cur.quant, cur.lo, cur.hi, out_shape)
            axes = self.g.tensor(f"{name}/axes", [2], np.int32, np.array([1, 2], np.int32))
            self.g.op(fb.BuiltinOperator.MEAN, [cur.index, axes], [out.index],
                      *builtin_options(fb.BuiltinOperator.MEAN, keepDims=True), version=2 if cur.quant else 1)
            self._note(i, "MEAN", "int8" if cur.quant else "float32")
            return out
        return self._pool2d(cur, layer, i, name, "AVERAGE_POOL_2D", fb.Padding.VALID)

    def _pool2d(self, cur: _Act, layer: AvgPool | MaxPool, i, name, op: str, padding: int) -> _Act:
        """One MAX_POOL_2D / AVERAGE_POOL_2D (`op`) over `layer`'s windows; int8 when the input is."""
        out_shape = self.shapes[i]
        out = self._new(name, [1, out_shape[1], out_shape[2], out_shape[0]], cur.quant, cur.lo, cur.hi, out_shape)
        opts = fb.Pool2DOptionsT()
        opts.padding = padding
        opts.strideH, opts.strideW = layer.stride
        opts.filterHeight, opts.filterWidth = layer.kernel
        self.g.op(getattr(fb.BuiltinOperator, op), [cur.index], [out.index], fb.BuiltinOptions.Pool2DOptions,
                  opts, version=2 if cur.quant else 1)
        self._note(i, op, "int8" if cur.quant else "float32")
        return out

    def _row_order(self, readers: list[int]) -> np.ndarray | None:
        """The order to store a dense layer's outputs in (rows permute for free): HWC when every reader
        unflattens it, else the stored order of an already written partner of an Add it reaches through
        elementwise ops and adds (so no ADD needs reordering)."""
        layers = [self.net.layers[k] for k in readers]
        shapes = {tuple(r.shape) for r in layers if isinstance(r, Unflatten)}
        if layers and len(shapes) == 1 and all(isinstance(r, Unflatten) for r in layers):
            return hwc_to_chw_order(shapes.pop())
        for k, r in zip(readers, layers):
            if isinstance(r, Add):
                partners = [self.acts[j] for j in self.net.inputs_of(k) if j in self.acts]
                if partners and partners[0].order is not None:
                    return partners[0].order
            if isinstance(r, (Activation, Shift, Add)):
                order = self._row_order(self.consumers[k])
                if order is not None:
                    return order
        return None

    def _dense(self, cur: _Act, layer: Dense, i, name, lo, hi, readers: list[int]) -> _Act:
        if len(cur.shape) != 1:
            raise ModelError(f"layer {i}: a dense layer needs a flattened input")
        w, b = layer.weight, np.asarray(layer.bias, dtype=np.float64)
        if cur.order is not None:                      # stored input order -> permute columns
            w = w[:, cur.order]
        row_order = self._row_order(readers)
        if row_order is not None:
            w, b = w[row_order], b[row_order]
        n_out = w.shape[0]
        fused = "relu6" if i in self.relu6_into else layer.act if layer.act in _ACT_CODES else "none"
        plo, phi = _pre_activation_range(layer, lo, hi)
        opts = fb.FullyConnectedOptionsT()
        opts.fusedActivationFunction = _ACT_CODES[fused]
        ell = sp.issparse(w) and self.int8 and self.sparse_ell and fused == "none" and \
            layer.act in ("none", "leaky_relu")
        blocks = block16_layout(sp.csr_matrix(w)) if sp.issparse(w) and self.int8 and not ell else None
        if ell:
            from tools.tflite.sparse_int8 import sparse_int8_layer  # it imports this module's weight_quant
            cur = self._quantized(cur, name)
            quant = act_quant(plo, phi)
            index = sparse_int8_layer(self.g, cur.index, cur.quant, w, b, quant, name, regroup=True)
            out = _Act(index, (n_out,), plo, phi, quant, row_order)
            self._note(i, f"GATHER + DEPTHWISE_CONV_2D (sparse ELL, nnz={w.nnz})", "int8")
        elif blocks is not None:
            cur = self._quantized(cur, name)
            values, indptr, block_cols = blocks
            ws = max(float(np.abs(values).max(initial=0.0)), 1e-12) / 127.0     # per tensor: see module doc
            qv = np.clip(np.round(values / ws), -127, 127).astype(np.int8)
            wt = self._block_weight(qv, indptr, block_cols, w.shape, ws, name)
            bs = cur.quant[0] * ws
            bt = self.g.tensor(f"{name}/b", [n_out], np.int32, np.round(b / bs).astype(np.int32), quant_params(bs, 0))
            out = self._new(name, [1, n_out], act_quant(lo, hi) if fused != "none" else act_quant(plo, phi),
                            plo, phi, (n_out,), row_order)
            self.g.op(fb.BuiltinOperator.FULLY_CONNECTED, [cur.index, wt, bt], [out.index],
                      fb.BuiltinOptions.FullyConnectedOptions, opts, version=SPARSE_FC_VERSION)
            self._note(i, f"FULLY_CONNECTED(sparse 1x16 blocks, {len(block_cols)} blocks, nnz={w.nnz})", "int8")
        elif sp.issparse(w):
            cur = self._float(cur, name)
            wt = sparse_weight_tensor(self.g, sp.csr_matrix(w), name)
            bt = self.g.tensor(f"{name}/b", [n_out], np.float32, b)
            out = self._new(name, [1, n_out], None, plo, phi, (n_out,), row_order)
            self.g.op(fb.BuiltinOperator.FULLY_CONNECTED, [cur.index, wt, bt], [out.index],
                      fb.BuiltinOptions.FullyConnectedOptions, opts, version=SPARSE_FC_VERSION)
            why = "no int8 kernel for CSR sparse FULLY_CONNECTED (only 1x16 blocks)" if self.int8 else ""
            self._note(i, f"FULLY_CONNECTED(sparse CSR, nnz={w.nnz})", "float32", why)
        elif self.int8:
            cur = self._quantized(cur, name)
            qw, ws = weight_quant(np.asarray(w))
            wt = self.g.tensor(f"{name}/w", w.shape, np.int8, qw, quant_params(ws, np.zeros(n_out, int), 0))
            bs = cur.quant[0] * ws
            bt = self.g.tensor(f"{name}/b", [n_out], np.int32, np.round(b / bs).astype(np.int32),
                               quant_params(bs, np.zeros(n_out, int), 0))
            out = self._new(name, [1, n_out], act_quant(lo, hi) if fused != "none" else act_quant(plo, phi),
                            plo, phi, (n_out,), row_order)
            self.g.op(fb.BuiltinOperator.FULLY_CONNECTED, [cur.index, wt, bt], [out.index],
                      fb.BuiltinOptions.FullyConnectedOptions, opts, version=5)
            self._note(i, "FULLY_CONNECTED", "int8")
        else:
            cur = self._float(cur, name)
            wt = self.g.tensor(f"{name}/w", w.shape, np.float32, np.asarray(w))
            bt = self.g.tensor(f"{name}/b", [n_out], np.float32, b)
            out = self._new(name, [1, n_out], None, plo, phi, (n_out,), row_order)
            self.g.op(fb.BuiltinOperator.FULLY_CONNECTED, [cur.index, wt, bt], [out.index],
                      fb.BuiltinOptions.FullyConnectedOptions, opts)
            self._note(i, "FULLY_CONNECTED", "float32")
        out.lo, out.hi = (lo, hi) if fused != "none" else (plo, phi)
        if layer.act == "leaky_relu":
            out = self._activation(out, Activation("leaky_relu", layer.alpha), i, f"{name}/act", lo, hi)
        return out

    def _block_weight(self, values: np.ndarray, indptr: np.ndarray, block_cols: np.ndarray, shape, scale: float,
                      name: str) -> int:
        rows, cols = shape
        dims = [fb.DimensionMetadataT() for _ in range(3)]
        dims[0].format, dims[0].denseSize = fb.DimensionType.DENSE, rows
        dims[1].format = fb.DimensionType.SPARSE_CSR
        dims[1].arraySegmentsType, dims[1].arraySegments = _index_vector(indptr)
        dims[1].arrayIndicesType, dims[1].arrayIndices = _index_vector(block_cols)
        dims[2].format, dims[2].denseSize = fb.DimensionType.DENSE, BLOCK
        sparsity = fb.SparsityParametersT()
        sparsity.traversalOrder, sparsity.blockMap, sparsity.dimMetadata = [0, 1, 2], [1], dims
        return self.g.tensor(f"{name}/w_1x16", [rows, cols], np.int8, values.reshape(-1),
                             quant_params(scale, 0), sparsity=sparsity)

    def _activation(self, cur: _Act, layer: Activation, i, name, lo, hi) -> _Act:
        """RELU, LEAKY_RELU, PRELU, LOGISTIC (int8 output fixed at 1/256), RELU6, or MAXIMUM / MINIMUM for
        another clip range."""
        quant = act_quant(lo, hi) if cur.quant else None
        shape = self.g.tensors[cur.index].shape
        version = 2 if quant else 1
        if layer.act == "sigmoid":
            quant = LOGISTIC_QUANT if cur.quant else None
        out = self._new(name, shape, quant, lo, hi, cur.shape, cur.order)
        if layer.act == "relu":
            self.g.op(fb.BuiltinOperator.RELU, [cur.index], [out.index], version=version)
        elif layer.act == "leaky_relu":
            self.g.op(fb.BuiltinOperator.LEAKY_RELU, [cur.index], [out.index],
                      *builtin_options(fb.BuiltinOperator.LEAKY_RELU, alpha=float(layer.alpha)), version=version)
        elif layer.act == "prelu":
            self.g.op(fb.BuiltinOperator.PRELU, [cur.index, self._slopes(cur, layer, name)], [out.index])
        elif layer.act == "sigmoid":
            self.g.op(fb.BuiltinOperator.LOGISTIC, [cur.index], [out.index], version=version)
        elif layer.act == "clip" and (layer.lo, layer.hi) == (0.0, 6.0):
            self.g.op(fb.BuiltinOperator.RELU6, [cur.index], [out.index], version=version)
        elif layer.act == "clip":
            out = self._clip(cur, layer, out, name)
        else:
            raise ModelError(f"layer {i}: activation {layer.act!r} cannot be written to TFLite")
        why = "between float sparse layers" if self.int8 and not quant else ""
        label = {"sigmoid": "LOGISTIC", "clip": "RELU6" if (layer.lo, layer.hi) == (0.0, 6.0) else
                 "MAXIMUM/MINIMUM"}.get(layer.act, layer.act.upper())
        self._note(i, label, "int8" if quant else "float32", why)
        return out

    def _slopes(self, cur: _Act, layer: Activation, name: str) -> int:
        """PReLU slopes as a constant broadcasting over NHWC (per channel) or over the stored vector."""
        alpha = np.asarray(layer.alpha, dtype=np.float64).reshape(-1)
        if len(cur.shape) == 3:
            alpha = alpha if alpha.size == cur.shape[0] else \
                alpha.reshape(cur.shape).transpose(1, 2, 0).reshape(-1)
            shape = [cur.shape[0]] if alpha.size == cur.shape[0] else [1, cur.shape[1], cur.shape[2], cur.shape[0]]
        else:
            alpha = alpha[cur.order] if cur.order is not None else alpha
            shape = [1, alpha.size]
        if not cur.quant:
            return self.g.tensor(f"{name}/alpha", shape, np.float32, alpha.reshape(shape))
        q, quant = const_quant(alpha)
        return self.g.tensor(f"{name}/alpha", shape, np.int8, q.reshape(shape), quant_params(*quant))

    def _clip(self, cur: _Act, layer: Activation, out: _Act, name: str) -> _Act:
        """clip(x, lo, hi) as MAXIMUM then MINIMUM with scalar constants; int8 keeps the input's parameters
        (the bounds are quantised on them)."""
        q = cur.quant
        def bound(label: str, value: float) -> int:
            if not q:
                return self.g.tensor(f"{name}/{label}", [1], np.float32, np.array([value], np.float32))
            code = np.clip(np.round(value / q[0]) + q[1], -128, 127)
            return self.g.tensor(f"{name}/{label}", [1], np.int8, np.array([code], np.int8), quant_params(*q))
        shape = self.g.tensors[cur.index].shape
        mid = self._new(f"{name}/max", shape, q, cur.lo, cur.hi, cur.shape, cur.order)
        self.g.op(fb.BuiltinOperator.MAXIMUM, [cur.index, bound("lo", layer.lo)], [mid.index], version=2 if q else 1)
        clipped = self._new(name, shape, q, out.lo, out.hi, cur.shape, cur.order)
        self.g.op(fb.BuiltinOperator.MINIMUM, [mid.index, bound("hi", layer.hi)], [clipped.index],
                  version=2 if q else 1)
        return clipped

    def _softmax(self, cur: _Act, i, name) -> _Act:
        out = self._new(name, self.g.tensors[cur.index].shape, SOFTMAX_QUANT if cur.quant else None, 0.0, 1.0,
                        cur.shape, cur.order)
        opts = fb.SoftmaxOptionsT()
        opts.beta = 1.0
        self.g.op(fb.BuiltinOperator.SOFTMAX, [cur.index], [out.index], fb.BuiltinOptions.SoftmaxOptions, opts,
                  version=2 if cur.quant else 1)
        self._note(i, "SOFTMAX", "int8" if cur.quant else "float32")
        return out


def block16_layout(w: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The matrix as 1x16 blocks (values (n, 16), block-row pointers, block columns), or None.

    None when the column count is not a multiple of 16 or when blocks would not pay for themselves:
    int8 blocks cost 16 + 2 bytes each against about 6 bytes per non-zero for float CSR, so
    scattered patterns (a globally permuted input) stay float CSR and block-aligned ones (a
    patch-aligned sensor key in front of a patchify stem) become int8.
    """
    rows, cols = w.shape
    if cols % BLOCK or w.nnz == 0 or _block_count(w) * (BLOCK + 2) > 6 * w.nnz:
        return None
    row_of = np.repeat(np.arange(rows), np.diff(w.indptr))
    keys = row_of * (cols // BLOCK) + w.indices // BLOCK
    blocks, where = np.unique(keys, return_inverse=True)
    if (BLOCK + 2) * len(blocks) > 6 * w.nnz:
        return None
    values = np.zeros((len(blocks), BLOCK))
    values[where, w.indices % BLOCK] = w.data
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(blocks // (cols // BLOCK), minlength=rows), out=indptr[1:])
    return values, indptr, blocks % (cols // BLOCK)


def _block_count(w: sp.csr_matrix, chunk: int = 1 << 22) -> int:
    """Number of 1x16 blocks of a CSR matrix with sorted indices, in chunks of rows (bounded temporaries)."""
    w.sort_indices()
    count, row = 0, 0
    while row < w.shape[0]:
        end = int(np.searchsorted(w.indptr, w.indptr[row] + chunk, side="right")) - 1
        end = max(end, row + 1)
        lo, hi = w.indptr[row], w.indptr[end]
        blocks = w.indices[lo:hi] // BLOCK
        starts = np.zeros(hi - lo, dtype=bool)
        firsts = w.indptr[row:end] - lo
        starts[firsts[firsts < hi - lo]] = True                # first entry of every (non-empty) row
        starts[1:] |= blocks[1:] != blocks[:-1]
        count += int(starts[:hi - lo].sum()) if hi > lo else 0
        row = end
    return count


def _run_length(src: np.ndarray, size: int) -> int:
    """The longest r (dividing len(src) and size) such that src is made of aligned runs r*k, r*k+1, ..."""
    for r in range(min(len(src), size), 0, -1):
        if len(src) % r or size % r:
            continue
        starts = src[::r]
        if np.all(starts % r == 0) and np.array_equal(src, (starts[:, None] + np.arange(r)).reshape(-1)):
            return r
    return 1


def sparse_weight_tensor(g: GraphBuilder, w: sp.csr_matrix, name: str) -> int:
    """A float32 weight tensor in TFLite's row-major CSR sparsity format (for FULLY_CONNECTED version 8)."""
    w.sort_indices()
    rows, cols = w.shape
    seg = fb.DimensionMetadataT()
    seg.format, seg.denseSize = fb.DimensionType.DENSE, rows
    csr = fb.DimensionMetadataT()
    csr.format = fb.DimensionType.SPARSE_CSR
    csr.arraySegmentsType, csr.arraySegments = _index_vector(w.indptr)
    csr.arrayIndicesType, csr.arrayIndices = _index_vector(w.indices)
    sparsity = fb.SparsityParametersT()
    sparsity.traversalOrder, sparsity.blockMap, sparsity.dimMetadata = [0, 1], [], [seg, csr]
    return g.tensor(f"{name}/w_csr", [rows, cols], np.float32, np.asarray(w.data, dtype=np.float32),
                    sparsity=sparsity)


def _index_vector(values: np.ndarray):
    if values.max(initial=0) < 1 << 16:
        vec = fb.Uint16VectorT()
        vec.values = values.astype(np.uint16)
        return fb.SparseIndexVector.Uint16Vector, vec
    vec = fb.Int32VectorT()
    vec.values = values.astype(np.int32)
    return fb.SparseIndexVector.Int32Vector, vec


def _padding(kernel, stride, pads, h: int, w: int, dilation=(1, 1)) -> int | None:
    """TFLite padding code for explicit pads, or None when they need an explicit PAD op."""
    if not any(pads):
        return fb.Padding.VALID
    kh, kw = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    sh, sw = stride
    total_h = max((-(-h // sh) - 1) * sh + kh - h, 0)
    total_w = max((-(-w // sw) - 1) * sw + kw - w, 0)
    same = (total_h // 2, total_w // 2, total_h - total_h // 2, total_w - total_w // 2)
    return fb.Padding.SAME if tuple(pads) == same else None


def _pre_activation_range(layer, lo: float, hi: float) -> tuple[float, float]:
    if layer.act == "leaky_relu" and lo < 0 and layer.alpha > 0:
        return lo / layer.alpha, hi
    return lo, hi


def calibration_ranges(net: Network, frames: np.ndarray, batch: int = CALIBRATION_BATCH) -> list[tuple[float, float]]:
    """Per-layer output (min, max) of the float network on calibration frames, in bounded batches."""
    frames = np.asarray(frames)
    lo, hi = np.full(len(net.layers), np.inf), np.full(len(net.layers), -np.inf)

    def observe(i: int, out: np.ndarray) -> None:
        lo[i], hi[i] = min(lo[i], float(out.min())), max(hi[i], float(out.max()))
    for a in range(0, len(frames), batch):
        forward(net, frames[a:a + batch], observe=observe)
    return [(float(a), float(b)) for a, b in zip(lo, hi)]


def write_tflite(net: Network, int8: bool = False, calib: np.ndarray | None = None,
                 metadata: dict | None = None, sparse_ell: bool = False,
                 release: bool = False) -> tuple[bytes, list[dict]]:
    """Write `net` as .tflite bytes; int8 needs calibration frames. Returns (bytes, per-op report).

    `sparse_ell`: int8 sparse layers without an activation (or with a LeakyReLU) that are not 1x16 blocks are
    written int8 in ELL form instead of float32 CSR. `release`: drop every layer's weights once written (the
    caller's network is emptied), so a very large keyed network is not held twice."""
    if int8 and (calib is None or len(calib) == 0):
        raise ModelError("int8 quantisation needs calibration frames")
    ranges = calibration_ranges(net, calib) if int8 else []
    low = _Lowering(net, int8, ranges, sparse_ell, release)
    first, last = low.run()
    meta = dict(metadata or {})
    meta["ops"] = low.report
    return low.g.finish([first], [last], meta, release=release), low.report
