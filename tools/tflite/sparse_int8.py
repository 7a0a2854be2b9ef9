"""A sparse matrix y = W x + b as int8 builtin ops (TFLite has no int8 CSR kernel): ELL form.

Rows are taken in aligned groups of M consecutive rows that read the same columns (M = 1 for a general
matrix; the channels of one position of a conv, when its output keeps them together). Every group's
column list is padded to the largest number of non-zeros per row, k (padding taps: weight 0 on column
0), giving a (k, G = O / M) table of column indices and a (k, O) table of weights. Then, on an int8
vector x (tensor [1, n]):

    GATHER(x, index (k, 1, G), axis 1)              -> [1, k, 1, G]  tap j of group g at (j, 0, g)
    DEPTHWISE_CONV_2D(filter [1, k, 1, O], VALID,   -> [1, 1, 1, O]  output channel g M + m = row g M + m:
                      depth multiplier M)                             k taps, per-row int8 weights, int32 bias
    RESHAPE                                         -> [1, O]

GATHER copies element by element in the runtime, so a group gathers its inputs once for its M rows:
for the SAN stage's conv layers that is 8-48x fewer copies than one gather per row.

`regroup=True` also groups rows that share a support but do not lie in aligned blocks (e.g. the rows of a
sensor key's inverse, one mixing group's pixels scattered over the frame): the depthwise conv computes the
rows in group order (groups padded with zero rows to the largest group, M) and a last GATHER
[1, G * M] -> [1, O] puts them back in row order.

The index tensor is int16 when every column fits (half the bytes of int32; the builtin GATHER kernel
takes int16 positions), else int32.

XNNPACK: the default delegate of edge.runtime.TFLiteModel (OpResolverType.AUTO) claims an int8
DEPTHWISE_CONV_2D whatever its op version and ran this shape (k x 1 taps, one row per channel) about 2x
slower end to end than the builtin kernel (measured: 32,768 rows x 27 taps 8.4 ms vs 4.1 ms, 8,192 x 27
2.2 ms vs 0.95 ms, same outputs). It takes an int8 conv only when the int32 bias carries affine
quantisation parameters (xnnpack_delegate.cc, CheckTensorFloat32OrQInt32Type); the builtin int8 kernel
never reads them (it rescales the bias by input scale x filter scale itself), so the bias is written
without them: the conv stays on the builtin kernel and the file saves 12 bytes per row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from ai_edge_litert import schema_py_generated as fb

from base.errors import ModelError
from tools.tflite.builder import GraphBuilder, builtin_options, quant_params
from tools.tflite.writer import weight_quant

GATHER_INT8_VERSION = 2           # int8 params
DEPTHWISE_VERSION = 3             # int8 per-channel
INT16_INDEX_LIMIT = 1 << 15


@dataclass(frozen=True)
class Ell:
    """W in ELL form over groups of `multiplier` consecutive channels sharing one column support: channel o
    is sum_j weight[j, o] * x[index[j, o // multiplier]] (padding taps have weight 0); row r is channel r, or
    channel rows[r] when regrouped."""

    index: np.ndarray      # (k, O / multiplier) int64 column indices, one column list per row group
    weight: np.ndarray     # (k, channels) float64; channels = O unless regrouped
    rows: np.ndarray | None = None    # regrouped: the channel of each output row (None: channel = row)

    @property
    def taps(self) -> int:
        return self.index.shape[0]

    @property
    def multiplier(self) -> int:
        return self.weight.shape[1] // self.index.shape[1]


def support_ids(w: sp.csr_matrix) -> np.ndarray:
    """One id per row: rows with the same set of column indices (structural non-zeros) share it."""
    w = sp.csr_matrix(w, copy=True)
    w.sort_indices()
    counts = np.diff(w.indptr)
    padded = np.full((w.shape[0], max(int(counts.max(initial=0)), 1)), -1, np.int64)
    row_of = np.repeat(np.arange(w.shape[0]), counts)
    padded[row_of, np.arange(w.nnz) - w.indptr[row_of]] = w.indices
    return np.unique(padded, axis=0, return_inverse=True)[1].reshape(-1)


def shared_support_block(w: sp.csr_matrix) -> int:
    """The largest M such that every aligned block of M consecutive rows shares one column support."""
    ids, rows = support_ids(w), w.shape[0]
    for m in sorted((d for d in range(1, rows + 1) if rows % d == 0), reverse=True):
        blocks = ids.reshape(-1, m)
        if np.all(blocks == blocks[:, :1]):
            return m
    return 1


def ell_form(w: sp.spmatrix) -> Ell:
    """The ELL tables of a sparse matrix (explicit zeros are dropped; a matrix with no non-zero gets one tap).
    Aligned blocks of rows with one column support share their index column (`shared_support_block`)."""
    w = sp.csr_matrix(w, copy=True)
    w.eliminate_zeros()
    w.sort_indices()
    rows = w.shape[0]
    counts = np.diff(w.indptr)
    k = max(int(counts.max(initial=0)), 1)
    row_of = np.repeat(np.arange(rows), counts)
    slot = np.arange(w.nnz) - w.indptr[row_of]
    index, weight = np.zeros((k, rows), np.int64), np.zeros((k, rows))
    index[slot, row_of], weight[slot, row_of] = w.indices, w.data
    return Ell(index[:, ::shared_support_block(w)], weight)


def regrouped_ell_form(w: sp.spmatrix) -> Ell:
    """ELL tables with the rows of each distinct support together (padded to the largest group, M), or
    `ell_form(w)` when that gathers and multiplies no fewer values."""
    plain = ell_form(w)
    w = sp.csr_matrix(w, copy=True)
    w.eliminate_zeros()
    w.sort_indices()
    ids = support_ids(w)
    group_of, rank = ids, np.zeros(len(ids), np.int64)           # support ids are 0 .. groups - 1
    order = np.argsort(group_of, kind="stable")
    counts = np.bincount(group_of)
    rank[order] = np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)
    groups, m, k = len(counts), int(counts.max(initial=1)), plain.taps
    if m == 1 or groups * k * (m + 1) + len(ids) >= plain.index.size + plain.weight.size:
        return plain
    channel = group_of * m + rank
    index, weight = np.zeros((k, groups), np.int64), np.zeros((k, groups * m))
    first = order[np.cumsum(counts) - counts]                    # one row of each group
    for gid, r in enumerate(first):
        cols = w.indices[w.indptr[r]:w.indptr[r + 1]]
        index[:len(cols), gid] = cols
    counts_row = np.diff(w.indptr)
    row_of = np.repeat(np.arange(w.shape[0]), counts_row)
    weight[np.arange(w.nnz) - w.indptr[row_of], channel[row_of]] = w.data
    return Ell(index, weight, channel)


def index_tensor(g: GraphBuilder, name: str, shape: list[int], values: np.ndarray, int16: bool) -> int:
    """A constant GATHER index tensor, int16 or int32."""
    dtype = np.int16 if int16 else np.int32
    return g.tensor(name, shape, dtype, values.astype(dtype))


def _bias_scales(ws: np.ndarray, weight: np.ndarray, in_scale: float) -> np.ndarray:
    """Per-row bias scales in_scale * ws; rows with no weight keep a unit weight scale so their bias stays
    representable (their int8 weights are all 0 anyway)."""
    empty = ~np.any(weight != 0, axis=0)
    return in_scale * np.where(empty, 1.0, ws)


def sparse_int8_layer(g: GraphBuilder, x: int, in_quant: tuple[float, int], w: sp.spmatrix, bias: np.ndarray,
                      out_quant: tuple[float, int], name: str, int16_indices: bool = True,
                      regroup: bool = False) -> int:
    """Append y = W x + b on the int8 vector tensor `x` ([1, n], quantised `in_quant` = (scale, zero point))
    to `g`; returns the int8 output tensor [1, O] quantised `out_quant`.

    Weights: symmetric per output row (the writer's `weight_quant`); bias int32 at in_scale * w_scale.
    Indices int16 when `int16_indices` and every column < 2**15, else int32. `regroup`: see the module doc.
    """
    w = sp.csr_matrix(w)
    rows, cols = w.shape
    shape_x = list(g.tensors[x].shape)
    if shape_x != [1, cols] or g.tensors[x].type != fb.TensorType.INT8:
        raise ModelError(f"{name}: the sparse layer takes an int8 [1, {cols}] vector, got {shape_x} of type "
                         f"{g.tensors[x].type} (INT8 = {fb.TensorType.INT8})")
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    if bias.shape != (rows,):
        raise ModelError(f"{name}: bias has {bias.size} values for {rows} rows")
    ell = regrouped_ell_form(w) if regroup else ell_form(w)
    k, groups = ell.index.shape
    channels = ell.weight.shape[1]
    if ell.rows is not None:                                      # bias per channel; padding channels 0
        bias = np.bincount(ell.rows, bias, channels)
    int16 = int16_indices and cols <= INT16_INDEX_LIMIT
    it = index_tensor(g, f"{name}/ell_index", [k, 1, groups], ell.index.reshape(k, 1, groups), int16)
    q = quant_params(*in_quant)
    taps = g.tensor(f"{name}/taps", [1, k, 1, groups], np.int8, quant=q)
    g.op(fb.BuiltinOperator.GATHER, [x, it], [taps], *builtin_options(fb.BuiltinOperator.GATHER, axis=1),
         version=GATHER_INT8_VERSION)
    qw, ws = weight_quant(ell.weight.T)                          # (channels, k): one scale per output channel
    bs = _bias_scales(ws, ell.weight, in_quant[0])
    qb = np.round(bias / bs)
    if np.abs(qb).max(initial=0) >= 2 ** 31:
        raise ModelError(f"{name}: a bias does not fit int32 at its scale (input range too narrow?)")
    zeros = np.zeros(channels, int)
    wt = g.tensor(f"{name}/ell_weight", [1, k, 1, channels], np.int8, qw.T.reshape(1, k, 1, channels),
                  quant_params(bs / in_quant[0], zeros, 3))
    bt = g.tensor(f"{name}/b", [channels], np.int32, qb.astype(np.int32))    # no quantisation: module docstring
    conv = g.tensor(f"{name}/dw", [1, 1, 1, channels], np.int8, quant=quant_params(*out_quant))
    dw = fb.DepthwiseConv2DOptionsT()
    dw.padding, dw.strideH, dw.strideW, dw.depthMultiplier = fb.Padding.VALID, 1, 1, ell.multiplier
    dw.dilationHFactor = dw.dilationWFactor = 1
    dw.fusedActivationFunction = fb.ActivationFunctionType.NONE
    g.op(fb.BuiltinOperator.DEPTHWISE_CONV_2D, [taps, wt, bt], [conv], fb.BuiltinOptions.DepthwiseConv2DOptions,
         dw, version=DEPTHWISE_VERSION)
    if ell.rows is None:
        out = g.tensor(name, [1, rows], np.int8, quant=quant_params(*out_quant))
        g.reshape(conv, out, [1, rows], name)
        return out
    flat = g.tensor(f"{name}/channels", [1, channels], np.int8, quant=quant_params(*out_quant))
    g.reshape(conv, flat, [1, channels], f"{name}/channels")
    back = index_tensor(g, f"{name}/row_index", [rows], ell.rows, int16_indices and channels <= INT16_INDEX_LIMIT)
    out = g.tensor(name, [1, rows], np.int8, quant=quant_params(*out_quant))
    g.op(fb.BuiltinOperator.GATHER, [flat, back], [out], *builtin_options(fb.BuiltinOperator.GATHER, axis=1),
         version=GATHER_INT8_VERSION)
    return out
