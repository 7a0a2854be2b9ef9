"""A spatially keyed SAN stage (Key-Nets, the `full` profile's treatment): no key and no weight in clear.

The stage's input and output carry the same key K, the downstream face model's sensor key, which must be
a pixel permutation (the sigmoid and the final clamp commute only with permutations). Every linear map
of the stage's DAG becomes a sparse matrix in keyed coordinates, A_out W A_in^-1, written int8 as GATHER +
DEPTHWISE_CONV_2D (tools.tflite.sparse_int8; there is no int8 CSR kernel) or float32 as a CSR
FULLY_CONNECTED (op version 8), on flattened vectors:

    t (keyed frame, HWC layout of the keyed CHW vector, as the pre-ADC stage delivers it; = T x, T = K's
       permutation composed with the public HWC layout)
    small_k = P_s D T^-1 t                       avg-pool to the 32x32 working size (absent when factor 1:
                                                 then P_s = T and small_k = t)
    h1 = LeakyReLU(A1 W1 P_s^-1 small_k + A1 c1) image half of enc1; c1 = its prototype half + bias
    p1 = B1 Pool A1^-1 h1                        (each pool its own sparse layer: 4 non-zeros per row)
    h2 = LeakyReLU(A2 W2 B1^-1 p1 + A2 b2),  p2 = B2 Pool A2^-1 h2
    h3 = LeakyReLU(A3 W3 B2^-1 p2 + A3 b3)
    h4 = LeakyReLU(A4 W4 N A3^-1 h3 + A4 b4)     nearest x2 upsample N composed into the conv (fewer
                                                 non-zeros than either alone)
    x_op_k = LOGISTIC(P_s Wh N A4^-1 h4 + P_s ch) head: feature half; ch = opposite prototype half + bias
    x_sm_k = LOGISTIC(P_s Wh N A4^-1 h4 + P_s cs) differential change only: cs = same prototype half + bias,
                                                 added as the constant P_s (cs - ch) to the head's linear output
    out = clamp(t + strength * T U P_s^-1 (x_op_k - base_k), 0, 1)     U = the bilinear upsample; base_k =
                                                 small_k (residual change) or x_sm_k (differential)

A1..A4, B1, B2 are positive generalized permutations over all units (a shuffle of the groups of units
that read the same inputs - a conv's channels at one position - and of the units inside each group,
log-uniform gains in KeyConfig's range; they commute with LeakyReLU); P_s is a permutation (the sigmoid
admits no gain). All come from a fresh 256-bit secret per export, never stored. int8 activation ranges
are calibrated per tensor on faces keyed with K, in keyed space (`keyed_ranges`). Since the
input and output keys are equal, the residual `t + change` is a plain ADD of the input: nothing keyed
there. What stays visible: the sparsity pattern of every layer (the grid's adjacency, which the structure
attack of tools/attacks/structure.py turns back into the pixel arrangement, as for the `full` profile),
the public pool/upsample coefficients, and the head's per-position constants P_s ch and P_s (cs - ch)
(values, shuffled).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from ai_edge_litert import schema_py_generated as fb

from keys.drbg import Drbg
from keys.factors import Key
from keys.generate import KeyConfig, gains
from tools.ir import AvgPool, Conv, conv_matrix, pool_matrix
from tools.san.errors import SanModelError
from tools.san.export import SanStage
from tools.san.nets import LEAK
from tools.san.tflite_export import LOGISTIC_QUANT, OUTPUT_QUANT, prototype_constants
from tools.tflite.builder import GraphBuilder, builtin_options, quant_params
from tools.tflite.sparse_int8 import sparse_int8_layer, support_ids
from tools.tflite.writer import (
    INPUT_QUANT,
    SPARSE_FC_VERSION,
    act_quant,
    const_quant,
    hwc_to_chw_order,
    sparse_weight_tensor,
)

INT8_GAIN_RANGE = (0.5, 2.0)   # hidden gains of the int8 stage: KeyConfig's; [0.25, 4] triples the int8 error (README)


@dataclass(frozen=True)
class UnitKey:
    """A generalized permutation on a vector: keyed[i] = gain[i] * plain[index[i]] (gains > 0)."""

    index: np.ndarray
    gain: np.ndarray

    def matrix(self) -> sp.csr_matrix:
        n = len(self.index)
        return sp.csr_matrix((self.gain, self.index, np.arange(n + 1)), shape=(n, n))

    def inverse_matrix(self) -> sp.csr_matrix:
        n = len(self.index)
        return sp.csr_matrix((1.0 / self.gain, (self.index, np.arange(n))), shape=(n, n))


def permutation_of(key: Key, size: int) -> np.ndarray:
    """perm with key.apply(x) == x[perm], or a SanModelError when the key is not a pure pixel permutation."""
    if key.size != size:
        raise SanModelError(f"the key acts on {key.size} values; the stage's frames have {size}")
    lin = key.linear_csr().tocsr()
    lin.sum_duplicates()
    if (np.any(np.diff(lin.indptr) != 1) or not np.allclose(lin.data, 1.0, atol=1e-12) or np.any(key.offset() != 0)
            or len(np.unique(lin.indices)) != size):
        raise SanModelError("the key is not a pixel permutation (gains, offsets or mixing): the SAN stage's sigmoid "
                            "and clamp commute only with permutations, so the face model it feeds must be "
                            "provisioned with a permutation-only sensor key")
    return lin.indices.astype(np.int64)


def frame_index(perm: np.ndarray, size: int) -> np.ndarray:
    """G with t = x_chw[G]: the keyed frame's stored (HWC) element j holds plain CHW value G[j]."""
    return perm[hwc_to_chw_order((3, size, size))]


# -- the plain stage as sparse matrices (CHW order) ---------------------------------------------------
def nearest_matrix(shape: tuple[int, int, int], k: int) -> sp.csr_matrix:
    """Nearest-neighbour upsampling x k of a (C,H,W) vector."""
    c, h, w = shape
    src = np.arange(c * h * w).reshape(c, h, w).repeat(k, axis=1).repeat(k, axis=2).reshape(-1)
    return sp.csr_matrix((np.ones(len(src)), src, np.arange(len(src) + 1)), shape=(len(src), c * h * w))


def _bilinear_1d(n: int, k: int) -> sp.csr_matrix:
    """torch's bilinear x k along one axis with align_corners=False (half-pixel; sources clamped at 0)."""
    src = np.maximum((np.arange(n * k) + 0.5) / k - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    rows = np.arange(n * k)
    m = sp.coo_matrix((np.concatenate([1 - frac, frac]), (np.concatenate([rows, rows]), np.concatenate([lo, hi]))),
                      shape=(n * k, n))
    return m.tocsr()


def bilinear_matrix(shape: tuple[int, int, int], k: int) -> sp.csr_matrix:
    """Bilinear upsampling x k of a (C,H,W) vector (= F.interpolate(mode='bilinear', align_corners=False))."""
    c, h, w = shape
    per_channel = sp.kron(_bilinear_1d(h, k), _bilinear_1d(w, k))
    m = sp.kron(sp.identity(c), per_channel, format="csr")
    m.eliminate_zeros()
    return m


def _conv(weight, shape: tuple[int, int, int]) -> sp.csr_matrix:
    w = weight.detach().numpy().astype(np.float64)
    pad = w.shape[-1] // 2
    return conv_matrix(Conv(w, np.zeros(len(w)), (1, 1), (pad,) * 4), shape)


def _bias(bias, spatial: int) -> np.ndarray:
    return np.repeat(bias.detach().numpy().astype(np.float64), spatial)


def _pool(shape: tuple[int, int, int], k: int) -> sp.csr_matrix:
    return pool_matrix(AvgPool((k, k), (k, k)), shape)


@dataclass
class Layer:
    """One linear map of the DAG: y = weight @ x + bias (plain or keyed coordinates), then `act`."""

    name: str
    weight: sp.csr_matrix
    bias: np.ndarray
    act: str            # "leaky_relu" | "logistic" | "none"


def plain_layers(stage: SanStage) -> tuple[list[Layer], sp.csr_matrix | None, sp.csr_matrix | None]:
    """(the autoencoder chain from the working-size face to the head's pre-sigmoid, D, U) in CHW order;
    D (avg-pool to the working size) and U (bilinear back) are None when the stage works at full size."""
    m, f = stage.member, stage.factor
    s = stage.size // f
    e1, e2 = m.enc1.out_channels, m.enc2.out_channels
    d1, d2 = m.dec1.out_channels, m.dec2.out_channels
    const1, consth, _ = (c.reshape(-1).astype(np.float64) for c in prototype_constants(stage))
    q, e = s // 2, s // 4
    features = m.head.weight.shape[1] - 3
    chain = [
        Layer("enc1", _conv(m.enc1.weight[:, :3], (3, s, s)), const1, "leaky_relu"),
        Layer("pool1", _pool((e1, s, s), 2), np.zeros(e1 * q * q), "none"),
        Layer("enc2", _conv(m.enc2.weight, (e1, q, q)), _bias(m.enc2.bias, q * q), "leaky_relu"),
        Layer("pool2", _pool((e2, q, q), 2), np.zeros(e2 * e * e), "none"),
        Layer("dec1", _conv(m.dec1.weight, (e2, e, e)), _bias(m.dec1.bias, e * e), "leaky_relu"),
        Layer("dec2", (_conv(m.dec2.weight, (d1, q, q)) @ nearest_matrix((d1, e, e), 2)).tocsr(),
              _bias(m.dec2.bias, q * q), "leaky_relu"),
        Layer("head", (_conv(m.head.weight[:, :features], (d2, s, s)) @ nearest_matrix((d2, q, q), 2)).tocsr(),
              consth, "logistic"),
    ]
    if f == 1:
        return chain, None, None
    return chain, _pool((3, stage.size, stage.size), f), bilinear_matrix((3, s, s), f)


# -- keying -------------------------------------------------------------------------------------------
def grouped_permutation(rng: Drbg, groups: np.ndarray) -> np.ndarray:
    """A random permutation (keyed[i] = plain[index[i]]) keeping the units of each group contiguous: the groups in
    a random order, the units inside each group in a random order."""
    shuffled = rng.child("units").permutation(len(groups))
    rank = rng.child("groups").permutation(int(groups.max(initial=-1)) + 1)
    return shuffled[np.argsort(rank[groups[shuffled]], kind="stable")]


def derive_unit_keys(secret: bytes, chain: list[Layer], config: KeyConfig | None = None) -> dict[str, UnitKey]:
    """Output keys of every hidden layer (positive generalized permutations over all units) and the
    head's permutation P_s ('head'), from a 256-bit secret. The permutation keeps the units that read the same
    inputs (the channels of one position of a conv) together, in a random order: the sparsity pattern shows
    which units those are anyway, and the int8 lowering then gathers their inputs once (sparse_int8)."""
    root = Drbg(secret, "san-stage/unit-keys")
    config = config or KeyConfig()
    keys = {}
    for layer in chain:
        n = layer.weight.shape[0]
        perm = grouped_permutation(root.child(f"{layer.name}/perm"), support_ids(layer.weight))
        gain = np.ones(n) if layer.act == "logistic" else gains(root.child(f"{layer.name}/gain"), n, config.gain_range)
        keys[layer.name] = UnitKey(perm, gain)
    return keys


def _keyed(layer: Layer, out: UnitKey, inp: UnitKey) -> Layer:
    w = (out.matrix() @ layer.weight @ inp.inverse_matrix()).tocsr()
    w.sort_indices()
    return Layer(layer.name, w, out.matrix() @ layer.bias, layer.act)


@dataclass
class KeyedMaps:
    """The keyed stage's sparse maps: `down` (t -> small_k, None at factor 1), the chain (small_k -> head
    pre-activation, P_s coordinates) and `up` (P_s coordinates -> t, None at factor 1); `head_shift` (differential
    change only) = P_s (cs - ch): the head's pre-activation plus it gives X_SM's."""

    down: Layer | None
    chain: list[Layer]
    up: Layer | None
    head_shift: np.ndarray | None = None


def keyed_maps(stage: SanStage, perm: np.ndarray, secret: bytes,
               gain_range: tuple[float, float] = KeyConfig.gain_range) -> KeyedMaps:
    """Every linear map of `stage` in keyed coordinates, for the frame permutation `perm` (key.apply(x) = x[perm]);
    hidden unit gains log-uniform in `gain_range`."""
    chain, down, up = plain_layers(stage)
    n = 3 * stage.size * stage.size
    _, consth, consth_sm = (c.reshape(-1).astype(np.float64) for c in prototype_constants(stage))
    frame = UnitKey(frame_index(perm, stage.size), np.ones(n))
    keys = derive_unit_keys(secret, chain, KeyConfig(gain_range=gain_range))
    small = keys["head"] if down is not None else frame      # the working-size face and X_OP share P_s
    keyed, previous = [], small
    for layer in chain:
        key = small if layer.act == "logistic" else keys[layer.name]
        keyed.append(_keyed(layer, key, previous))
        previous = key
    shift = small.matrix() @ (consth_sm - consth) if stage.change == "differential" else None
    if down is None:
        return KeyedMaps(None, keyed, None, shift)
    return KeyedMaps(_keyed(Layer("down", down, np.zeros(down.shape[0]), "none"), small, frame), keyed,
                     _keyed(Layer("up", up, np.zeros(up.shape[0]), "none"), frame, small), shift)


def _activate(layer: Layer, pre: np.ndarray) -> np.ndarray:
    if layer.act == "leaky_relu":
        return np.where(pre >= 0, pre, LEAK * pre)
    if layer.act == "logistic":
        return 1.0 / (1.0 + np.exp(-pre))
    return pre


def keyed_forward(maps: KeyedMaps, t: np.ndarray, strength: float) -> dict[str, np.ndarray]:
    """Every tensor of the keyed graph in float64 for keyed frames t (N, n) (the frame layout, values in [0, 1]):
    each layer's linear output under its name and its activation under 'name/act', then 'head_sm' and
    'head_sm/act' (differential change), 'change', 'up' (factor > 1), 'scaled' and 'out' (clamped)."""
    values = {"input": t}
    h = small = t
    for layer in ([maps.down] if maps.down is not None else []) + maps.chain:
        values[layer.name] = pre = np.asarray(layer.weight @ h.T).T + layer.bias
        values[f"{layer.name}/act"] = h = _activate(layer, pre)
        if layer is maps.down:
            small = h
    if maps.head_shift is not None:
        values["head_sm"] = pre + maps.head_shift
        small = values["head_sm/act"] = _activate(maps.chain[-1], values["head_sm"])
    change = values["change"] = h - small
    if maps.up is not None:
        change = values["up"] = np.asarray(maps.up.weight @ change.T).T
    values["scaled"] = strength * change
    values["out"] = np.clip(t + values["scaled"], 0.0, 1.0)
    return values


def keyed_ranges(maps: KeyedMaps, frames: np.ndarray, strength: float,
                 batch: int = 64) -> dict[str, tuple[float, float]]:
    """Per-tensor (min, max) of `keyed_forward` over keyed frames (N, n) in [0, 1], in bounded batches. The keyed
    activations are permutations / positive gains of the plain ones, so no key is needed beyond the maps."""
    ranges: dict[str, tuple[float, float]] = {}
    for a in range(0, len(frames), batch):
        for name, value in keyed_forward(maps, frames[a:a + batch], strength).items():
            lo, hi = ranges.get(name, (np.inf, -np.inf))
            ranges[name] = (min(lo, float(value.min())), max(hi, float(value.max())))
    return ranges


def keyed_frames(faces: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """uint8 faces (N, S, S, 3) as keyed frame vectors t (N, 3 S S) in [0, 1] (the layout the stage consumes)."""
    n, size = len(faces), faces.shape[1]
    chw = faces.transpose(0, 3, 1, 2).reshape(n, -1).astype(np.float64) / 255.0
    return chw[:, frame_index(perm, size)]


# -- lowering -----------------------------------------------------------------------------------------
class _Graph:
    """GraphBuilder wrapper for the keyed stage's ops on vectors [1, n]: float32 (`ranges` None) or int8 with
    per-tensor activation parameters from `ranges` (calibrated names of `keyed_forward`)."""

    def __init__(self, ranges: dict[str, tuple[float, float]] | None = None):
        self.g = GraphBuilder()
        self.ops: list[str] = []
        self.ranges, self.int8 = ranges, ranges is not None
        self.quant: dict[int, tuple[float, int] | None] = {}

    def tensor(self, name: str, shape: list[int], quant: tuple[float, int] | None = None) -> int:
        """An activation tensor: int8 with `quant` (default: its calibrated range) or float32."""
        if self.int8 and quant is None:
            quant = act_quant(*self.ranges[name])
        q = quant if self.int8 else None
        index = self.g.tensor(name, shape, np.int8 if q else np.float32, quant=quant_params(*q) if q else None)
        self.quant[index] = q
        return index

    def _op(self, code: int, label: str, inputs: list[int], out: int, options_type: int = 0, options=None,
            version: int | None = None) -> int:
        self.g.op(code, inputs, [out], options_type, options, version or (2 if self.int8 else 1))
        self.ops.append(label)
        return out

    def const(self, name: str, value: float) -> int:
        if not self.int8:
            return self.g.tensor(name, [1], np.float32, np.full(1, value, np.float32))
        quant = act_quant(0.0, value)                   # a value >= 0: the top code, exactly (0: the zero point)
        code = 127 if value > 0 else quant[1]
        return self.g.tensor(name, [1], np.int8, np.array([code], np.int8), quant_params(*quant))

    def vector(self, name: str, values: np.ndarray) -> int:
        """A constant [1, n] vector: float32, or int8 on its own range."""
        if not self.int8:
            return self.g.tensor(name, [1, len(values)], np.float32, values[None].astype(np.float32))
        q, quant = const_quant(values)
        index = self.g.tensor(name, [1, len(values)], np.int8, q[None], quant_params(*quant))
        self.quant[index] = quant
        return index

    def sparse(self, x: int, layer: Layer) -> int:
        """The layer's linear map, then its activation."""
        return self.activate(self.linear(x, layer), layer, f"{layer.name}/act")

    def linear(self, x: int, layer: Layer) -> int:
        """The layer's linear map y = W x + b."""
        w = layer.weight
        rows = w.shape[0]
        if self.int8:
            out = sparse_int8_layer(self.g, x, self.quant[x], w, layer.bias, act_quant(*self.ranges[layer.name]),
                                    layer.name)
            self.quant[out] = act_quant(*self.ranges[layer.name])
            self.ops.append(f"GATHER+DEPTHWISE_CONV_2D(ELL, {w.nnz} non-zeros)")
        else:   # CSR float32 FULLY_CONNECTED (version 8: XNNPACK would claim version 1 and compute garbage)
            wt = sparse_weight_tensor(self.g, w, layer.name)
            bt = self.g.tensor(f"{layer.name}/b", [rows], np.float32, layer.bias.astype(np.float32))
            opts = fb.FullyConnectedOptionsT()
            opts.fusedActivationFunction = fb.ActivationFunctionType.NONE
            out = self._op(fb.BuiltinOperator.FULLY_CONNECTED, f"FULLY_CONNECTED(sparse CSR, nnz={w.nnz})",
                           [x, wt, bt], self.tensor(layer.name, [1, rows]), fb.BuiltinOptions.FullyConnectedOptions,
                           opts, SPARSE_FC_VERSION)
        return out

    def activate(self, out: int, layer: Layer, name: str) -> int:
        """The layer's activation on `out`, as tensor `name`."""
        rows = self.g.tensors[out].shape[1]
        if layer.act == "leaky_relu":
            return self._op(fb.BuiltinOperator.LEAKY_RELU, "LEAKY_RELU", [out], self.tensor(name, [1, rows]),
                            *builtin_options(fb.BuiltinOperator.LEAKY_RELU, alpha=LEAK))
        if layer.act == "logistic":
            return self._op(fb.BuiltinOperator.LOGISTIC, "LOGISTIC", [out],
                            self.tensor(name, [1, rows], LOGISTIC_QUANT))
        return out

    def binary(self, code: int, label: str, a: int, b: int, name: str, quant: tuple[float, int] | None = None) -> int:
        shape = list(self.g.tensors[a].shape)
        return self._op(code, label, [a, b], self.tensor(name, shape, quant), *builtin_options(code))

    def reshape(self, x: int, shape: list[int], name: str) -> int:
        out = self.tensor(name, shape, self.quant[x])
        self.g.reshape(x, out, shape, name)
        self.ops.append("RESHAPE")
        return out


def _lower(g: _Graph, maps: KeyedMaps, size: int, strength: float) -> tuple[int, int]:
    """The keyed stage's ops; returns (input, output) tensor indices."""
    n = 3 * size * size
    first = g.tensor("input", [1, size, size, 3], INPUT_QUANT)
    t = g.reshape(first, [1, n], "input_flat")
    small = g.sparse(t, maps.down) if maps.down is not None else t
    h = small
    for layer in maps.chain[:-1]:
        h = g.sparse(h, layer)
    head = maps.chain[-1]
    pre = g.linear(h, head)
    h, base = g.activate(pre, head, "head/act"), small
    if maps.head_shift is not None:         # differential change: X_SM's head shares the linear map
        shifted = g.binary(fb.BuiltinOperator.ADD, "ADD", pre, g.vector("head_shift", maps.head_shift), "head_sm")
        base = g.activate(shifted, head, "head_sm/act")
    change = g.binary(fb.BuiltinOperator.SUB, "SUB", h, base, "change")
    if maps.up is not None:
        change = g.sparse(change, maps.up)
    if strength != 1.0:
        change = g.binary(fb.BuiltinOperator.MUL, "MUL", change, g.const("strength", strength), "scaled")
    if g.int8:            # the clamp to [0, 1] is the ADD's saturation onto the output scale
        out = g.binary(fb.BuiltinOperator.ADD, "ADD", t, change, "sum", OUTPUT_QUANT)
    else:
        out = g.binary(fb.BuiltinOperator.ADD, "ADD", t, change, "sum")
        out = g.binary(fb.BuiltinOperator.MAXIMUM, "MAXIMUM", out, g.const("zero", 0.0), "clamp_lo")
        out = g.binary(fb.BuiltinOperator.MINIMUM, "MINIMUM", out, g.const("one", 1.0), "clamp")
    return first, g.reshape(out, [1, size, size, 3], "output")


def write_keyed_san_tflite(stage: SanStage, key: Key, metadata: dict | None = None, secret: bytes | None = None,
                           int8: bool = False, calib_faces: np.ndarray | None = None,
                           gain_range: tuple[float, float] | None = None) -> bytes:
    """The stage keyed with the face model's sensor key `key` (a pixel permutation) on input and output, as
    .tflite bytes; hidden keys from `secret` (a fresh random one when None; never stored), their gains in
    `gain_range` (default KeyConfig's, INT8_GAIN_RANGE for int8).

    float32 (`int8` False): CSR FULLY_CONNECTED layers. int8: every sparse map as GATHER + DEPTHWISE_CONV_2D
    (tools.tflite.sparse_int8), per-tensor activation ranges calibrated on `calib_faces` (uint8 (N,S,S,3) plain
    faces, keyed with `key` here), input and output int8 with scale 1/255, zero point -128."""
    s, n = stage.size, 3 * stage.size * stage.size
    if int8 and (calib_faces is None or len(calib_faces) == 0):
        raise SanModelError("the int8 keyed stage needs calibration faces")
    if int8 and (calib_faces.ndim != 4 or calib_faces.shape[1:] != (s, s, 3) or calib_faces.dtype != np.uint8):
        raise SanModelError(f"calibration faces must be uint8 (N,{s},{s},3), got {calib_faces.dtype} "
                            f"{calib_faces.shape}")
    gain_range = gain_range or (INT8_GAIN_RANGE if int8 else KeyConfig.gain_range)
    perm = permutation_of(key, n)
    maps = keyed_maps(stage, perm, secret or secrets.token_bytes(32), gain_range)
    ranges = None
    if int8:
        ranges = keyed_ranges(maps, keyed_frames(calib_faces, perm), stage.strength)
        ranges["down/act"] = ranges["down"] = (0.0, 1.0)    # the working-size face: the input's exact scale
    g = _Graph(ranges)
    first, out = _lower(g, maps, s, stage.strength)
    layers = ([maps.down] if maps.down else []) + maps.chain + ([maps.up] if maps.up else [])
    meta = {"kind": "san-stage", "input_shape": [s, s, 3], "strength": stage.strength, "change": stage.change,
            "dtype": "int8" if int8 else "float32", "keyed": True, "ops": g.ops,
            "nnz": int(sum(layer.weight.nnz for layer in layers)),
            "input_key_fingerprint": key.fingerprint, "output_key_fingerprint": key.fingerprint,
            "hidden_keys": "positive generalized permutations over all units of every layer, in the weights",
            "hidden_gain_range": list(gain_range), **(metadata or {})}
    return g.g.finish([first], [out], meta, description="keycam SAN stage (keyed)")


# -- checks ---------------------------------------------------------------------------------------------
def longest_run(blob: bytes, p: np.ndarray, dtype) -> int:
    """The longest run of consecutive entries of p (p[a], p[a+1], ...) stored anywhere in `blob` as `dtype`."""
    n, size = len(p), np.dtype(dtype).itemsize
    following = np.full(n, -1, np.int64)
    following[p[:-1]] = p[1:]
    best = 0
    for start in range(size):                     # every byte alignment
        values = np.frombuffer(blob, dtype, (len(blob) - start) // size, start).astype(np.int64)
        inside = (values[:-1] >= 0) & (values[:-1] < n)
        hit = inside & (values[1:] == following[np.where(inside, values[:-1], 0)])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], hit.astype(np.int8), [0]])))
        if len(edges):
            best = max(best, int((edges[1::2] - edges[::2]).max()) + 1)
    return best


def clear_key_findings(blob: bytes, key: Key, size: int, run: int = 16) -> list[str]:
    """What of the key a .tflite stores in clear: `run` consecutive entries of the key's permutation or its
    inverse (on CHW vectors, from the HWC frame to CHW, or within HWC) as uint16 (the same bytes as int16 below
    2**15), int32 or int64 values at any byte offset (whole index vectors included), e.g. the indices of a
    GATHER that un-keys the frame.

    A GATHER op as such is no finding: the int8 stage's GATHERs take the keyed sparsity pattern (the column
    indices the float stage's CSR weights store too), not K."""
    perm = permutation_of(key, 3 * size * size)
    order = hwc_to_chw_order((3, size, size))
    variants = (("permutation", perm), ("frame index", perm[order]),
                ("HWC permutation", np.argsort(order)[perm[order]]))
    found = []
    for name, p in variants:
        for what, q in ((name, p), (f"inverse {name}", np.argsort(p))):
            for dtype in (np.uint16, np.int32, np.int64):
                if q.max() < np.iinfo(dtype).max and longest_run(blob, q, dtype) >= run:
                    found.append(f"{what} as {np.dtype(dtype).name}")
    return found
