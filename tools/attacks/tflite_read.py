"""Read what an attacker sees in a keyed .tflite: its float32 CSR layers (support and exact values), and an
int8 sparse map stage (GATHER + DEPTHWISE_CONV_2D, tools.tflite.sparse_int8) dequantised."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from ai_edge_litert import schema_py_generated as fb

from tools.attacks.target import AttackError

_PASS_THROUGH = (fb.BuiltinOperator.QUANTIZE, fb.BuiltinOperator.DEQUANTIZE)
_INDEX_TYPES = {fb.TensorType.INT16: np.int16, fb.TensorType.INT32: np.int32}


@dataclass(frozen=True)
class SparseLayer:
    """One CSR-sparse FULLY_CONNECTED op: y = weight x + bias (float32 values as stored)."""
    weight: sp.csr_matrix
    bias: np.ndarray
    nhwc: tuple[int, int, int] | None    # (H, W, C) when the output is reshaped to an NHWC map next (rows in HWC order)


def _index_values(vec) -> np.ndarray:
    return np.asarray(vec.values, dtype=np.int64)


def _code(model, op) -> int:
    c = model.operatorCodes[op.opcodeIndex]
    return max(c.builtinCode, c.deprecatedBuiltinCode)


def _buffer(model, tensor, dtype) -> np.ndarray:
    return np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype)


def _csr_weight(model, t) -> sp.csr_matrix:
    rows, cols = int(t.shape[0]), int(t.shape[1])
    dims = t.sparsity.dimMetadata
    if len(dims) != 2 or dims[1].format != fb.DimensionType.SPARSE_CSR or list(t.sparsity.traversalOrder) != [0, 1]:
        raise AttackError("a sparse layer is not in the row-major CSR layout this attack reads")
    if t.type != fb.TensorType.FLOAT32:
        raise AttackError("a sparse layer's weights are not float32 CSR (this attack reads exact values)")
    indptr, indices = _index_values(dims[1].arraySegments), _index_values(dims[1].arrayIndices)
    return sp.csr_matrix((_buffer(model, t, np.float32), indices, indptr), shape=(rows, cols))


def sparse_layers(blob: bytes) -> list[SparseLayer]:
    """Every float32 CSR FULLY_CONNECTED op of the model in graph order (QUANTIZE/DEQUANTIZE between an op
    and a RESHAPE to 4-D are looked through to find `nhwc`)."""
    model = fb.ModelT.InitFromPackedBuf(blob, 0)
    graph = model.subgraphs[0]
    out: list[SparseLayer] = []
    source: dict[int, int] = {}          # tensor -> index in `out` of the sparse layer that produced it
    for op in graph.operators:
        code = _code(model, op)
        if code == fb.BuiltinOperator.FULLY_CONNECTED and graph.tensors[op.inputs[1]].sparsity is not None:
            t = graph.tensors[op.inputs[1]]
            if t.sparsity.blockMap is not None and len(t.sparsity.blockMap):
                continue                 # int8 1x16 blocks: no exact values to read
            w = _csr_weight(model, t)
            bias = _buffer(model, graph.tensors[op.inputs[2]], np.float32).astype(np.float64) \
                if len(op.inputs) > 2 and op.inputs[2] >= 0 else np.zeros(w.shape[0])
            source[op.outputs[0]] = len(out)
            out.append(SparseLayer(w, bias, None))
        elif code in _PASS_THROUGH and op.inputs[0] in source:
            source[op.outputs[0]] = source[op.inputs[0]]
        elif code == fb.BuiltinOperator.RESHAPE and op.inputs[0] in source:
            shape = [int(s) for s in graph.tensors[op.outputs[0]].shape]
            k = source[op.inputs[0]]
            if len(shape) == 4 and out[k].nhwc is None:
                out[k] = SparseLayer(out[k].weight, out[k].bias, (shape[1], shape[2], shape[3]))
    return out


def first_sparse_layer(blob: bytes) -> sp.csr_matrix:
    """The weight of the first CSR-sparse FULLY_CONNECTED op as a scipy matrix (rows = outputs, cols = inputs).

    Raises AttackError when the model has no sparse layer (the structure attack does not apply).
    """
    layers = sparse_layers(blob)
    if not layers:
        raise AttackError("the model has no sparse FULLY_CONNECTED layer: nothing for the structure attack to read")
    return layers[0].weight


@dataclass(frozen=True)
class Int8Map:
    """An int8 sparse map stage y = weight x + bias on the dequantised model input, dequantised back to float."""
    weight: sp.csr_matrix
    bias: np.ndarray
    input_quant: tuple[float, int]        # the model input's (scale, zero point): x = scale * (q - zero point)


def _quant(t) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(t.quantization.scale, np.float64), np.asarray(t.quantization.zeroPoint, np.int64)


def _consumer(model, ops, tensor: int, code: int):
    return next((op for op in ops if _code(model, op) == code and op.inputs[0] == tensor), None)


def first_int8_map(blob: bytes) -> Int8Map | None:
    """The model's first stage when it is an int8 GATHER on the input followed by a DEPTHWISE_CONV_2D (the ELL
    form of tools.tflite.sparse_int8, regrouped or not), as y = W x + b on the dequantised input; None for any
    other model."""
    model = fb.ModelT.InitFromPackedBuf(blob, 0)
    graph = model.subgraphs[0]
    ops = list(graph.operators)
    x = graph.inputs[0]
    gather = _consumer(model, ops, x, fb.BuiltinOperator.GATHER)
    dw = gather and _consumer(model, ops, gather.outputs[0], fb.BuiltinOperator.DEPTHWISE_CONV_2D)
    if dw is None:
        return None
    xt, it, wt, bt = (graph.tensors[i] for i in (x, gather.inputs[1], dw.inputs[1], dw.inputs[2]))
    in_scale, in_zero = _quant(xt)
    k, groups = int(it.shape[0]), int(it.shape[2])
    index = _buffer(model, it, _INDEX_TYPES[it.type]).reshape(k, groups)
    channels = int(wt.shape[3])
    qw = _buffer(model, wt, np.int8).reshape(k, channels).astype(np.float64)
    w_scale, _ = _quant(wt)
    weight = qw * w_scale[None, :]
    chan = np.broadcast_to(np.arange(channels), (k, channels))
    col = index[:, np.arange(channels) // (channels // groups)]
    keep = qw != 0
    cols = int(np.prod(xt.shape))
    w = sp.csr_matrix((weight[keep], (chan[keep], col[keep])), shape=(channels, cols))
    # the conv sums w_q * (q - zero point) * in_scale, i.e. (w_q * w_scale) x on x = in_scale * (q - zero point)
    bias = _buffer(model, bt, np.int32).astype(np.float64) * w_scale * float(in_scale[0])
    flat = _consumer(model, ops, dw.outputs[0], fb.BuiltinOperator.RESHAPE)
    back = flat and _consumer(model, ops, flat.outputs[0], fb.BuiltinOperator.GATHER)
    if back is not None:                       # regrouped: a last GATHER puts the channels back in row order
        rt = graph.tensors[back.inputs[1]]
        rows = _buffer(model, rt, _INDEX_TYPES[rt.type]).astype(np.int64)
        w, bias = w[rows], bias[rows]
    return Int8Map(sp.csr_matrix(w), bias, (float(in_scale[0]), int(in_zero[0])))
