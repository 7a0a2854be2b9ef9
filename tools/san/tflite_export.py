"""Lower a SAN stage (tools.san.export.SanStage) to a .tflite model with builtin ops, float32 or int8.

The project's writer (tools/tflite/writer.py) lowers sequential IR networks; the SAN stage is a small DAG,
so it is lowered here with the same GraphBuilder and the writer's quantisation helpers (NHWC tensors):

    x --AVERAGE_POOL_2D(f)--> small                                   (f = crop size / 32; none when f = 1)
    small --CONV_2D(image half of enc1)--> ADD(per-position constant)  concat(x, prototype) -> conv folds into a
          --LEAKY_RELU--> AVERAGE_POOL_2D                              conv of x plus the prototype's (constant)
    --CONV_2D--> LEAKY_RELU --> AVERAGE_POOL_2D                        contribution with the bias
    --CONV_2D--> LEAKY_RELU --> RESIZE_NEAREST_NEIGHBOR(x2)            (twice: decoder)
    --CONV_2D(feature half of the head)--> ADD(constant: opposite prototype + bias) --LOGISTIC--> x_op
                                       +--> ADD(constant: same prototype + bias) --LOGISTIC--> x_sm (differential)
    SUB(x_op, small | x_sm) --RESIZE_BILINEAR(half-pixel, = torch align_corners=False)--> MUL(strength) --ADD(x)
    --> clamp

int8: weights symmetric per output channel, activations asymmetric per tensor from calibration faces (the
writer's `weight_quant` / `act_quant`), input and output int8 with scale 1/255 and zero point -128, so
uint8 frames map exactly and the output dequantises to k/255; the clamp to [0, 1] is the final ADD's
saturation onto that output scale. float32: the clamp is MAXIMUM/MINIMUM.

The keyed stage (sparse keyed layers, no key in clear) is lowered by tools.san.tflite_keyed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as fb

from tools.san.errors import SanModelError
from tools.san.export import SanStage
from tools.san.nets import LEAK
from tools.tflite.builder import GraphBuilder, builtin_options, quant_params
from tools.tflite.writer import INPUT_QUANT, act_quant, const_quant, weight_quant

LOGISTIC_QUANT = (1.0 / 256.0, -128)      # TFLite's fixed int8 LOGISTIC output parameters
OUTPUT_QUANT = INPUT_QUANT                # k/255: [0, 1] exactly, saturation = clamp


@torch.no_grad()
def trace(stage: SanStage, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor of the lowered graph (NCHW, float) for float crops x (N,3,S,S) in [0,1], by the same
    decomposition as the lowering (conv on the image + constant prototype term); 'out' equals stage(x)."""
    m, t = stage.member, {}
    n = x.shape[0]
    t["small"] = F.avg_pool2d(x, stage.factor) if stage.factor > 1 else x
    const1, consth, consth_sm = prototype_constants(stage)
    t["e1_conv"] = F.conv2d(t["small"], m.enc1.weight[:, :3], padding=1)
    t["e1_add"] = t["e1_conv"] + torch.from_numpy(const1).expand(n, -1, -1, -1)
    t["e1_act"] = F.leaky_relu(t["e1_add"], LEAK)
    t["e1_pool"] = F.avg_pool2d(t["e1_act"], 2)
    t["e2_conv"] = m.enc2(t["e1_pool"])
    t["e2_act"] = F.leaky_relu(t["e2_conv"], LEAK)
    t["e2_pool"] = F.avg_pool2d(t["e2_act"], 2)
    t["d1_conv"] = m.dec1(t["e2_pool"])
    t["d1_act"] = F.leaky_relu(t["d1_conv"], LEAK)
    t["d1_up"] = F.interpolate(t["d1_act"], scale_factor=2, mode="nearest")
    t["d2_conv"] = m.dec2(t["d1_up"])
    t["d2_act"] = F.leaky_relu(t["d2_conv"], LEAK)
    t["d2_up"] = F.interpolate(t["d2_act"], scale_factor=2, mode="nearest")
    channels = m.head.weight.shape[1] - 3
    t["h_conv"] = F.conv2d(t["d2_up"], m.head.weight[:, :channels])
    t["h_add"] = t["h_conv"] + torch.from_numpy(consth).expand(n, -1, -1, -1)
    t["x_op"] = torch.sigmoid(t["h_add"])
    if stage.change == "differential":
        t["h_add_sm"] = t["h_conv"] + torch.from_numpy(consth_sm).expand(n, -1, -1, -1)
        t["x_sm"] = torch.sigmoid(t["h_add_sm"])
    t["change"] = t["x_op"] - t.get("x_sm", t["small"])
    t["change_up"] = F.interpolate(t["change"], scale_factor=float(stage.factor), mode="bilinear",
                                   align_corners=False) if stage.factor > 1 else t["change"]
    t["scaled"] = stage.strength * t["change_up"]
    t["out"] = (x + t["scaled"]).clamp(0.0, 1.0)
    return t


@torch.no_grad()
def prototype_constants(stage: SanStage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-position constants (1,C,H,W): enc1's prototype half + bias, and the head's prototype half + bias
    with the opposite and with the same prototype."""
    m = stage.member
    const1 = F.conv2d(stage.same, m.enc1.weight[:, 3:], m.enc1.bias, padding=1)
    channels = m.head.weight.shape[1] - 3
    heads = (F.conv2d(p, m.head.weight[:, channels:], m.head.bias) for p in (stage.opposite, stage.same))
    return tuple(c.numpy().astype(np.float32) for c in (const1, *heads))


@dataclass
class _T:
    index: int
    quant: tuple[float, int] | None


class _Lowering:
    """Builds the graph of one SanStage; `ranges` maps trace names to calibrated (lo, hi) (int8 only)."""

    def __init__(self, stage: SanStage, int8: bool, ranges: dict[str, tuple[float, float]]):
        self.stage, self.int8, self.ranges = stage, int8, ranges
        self.g = GraphBuilder()
        self.ops: list[str] = []

    def _quant(self, name: str) -> tuple[float, int] | None:
        return act_quant(*self.ranges[name]) if self.int8 else None

    def _tensor(self, name: str, shape, quant) -> _T:
        dtype = np.int8 if quant else np.float32
        return _T(self.g.tensor(name, shape, dtype, quant=quant_params(*quant) if quant else None), quant)

    def _shape(self, t: _T) -> list[int]:
        return list(self.g.tensors[t.index].shape)

    def _op(self, code: int, name: str, inputs: list[int], out: _T, options_type: int = 0, options=None,
            version: int | None = None) -> _T:
        self.g.op(code, inputs, [out.index], options_type, options, version or (2 if self.int8 else 1))
        self.ops.append(name)
        return out

    def _const(self, name: str, nhwc: np.ndarray) -> _T:
        """A constant activation-like tensor (per-tensor int8 from its own range, or float32)."""
        if not self.int8:
            return _T(self.g.tensor(name, nhwc.shape, np.float32, nhwc.astype(np.float32)), None)
        q, quant = const_quant(nhwc)
        return _T(self.g.tensor(name, nhwc.shape, np.int8, q, quant_params(*quant)), quant)

    # -- layers -------------------------------------------------------------------------------------
    def conv(self, x: _T, name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> _T:
        w = weight.detach().numpy().transpose(0, 2, 3, 1).astype(np.float64)     # OHWI
        b = np.zeros(len(w)) if bias is None else bias.detach().numpy().astype(np.float64)
        o, kh = w.shape[0], w.shape[1]
        if self.int8:
            qw, ws = weight_quant(w)
            wt = self.g.tensor(f"{name}/w", w.shape, np.int8, qw, quant_params(ws, np.zeros(o, int), 0))
            bs = x.quant[0] * ws
            bt = self.g.tensor(f"{name}/b", [o], np.int32, np.round(b / bs).astype(np.int32),
                               quant_params(bs, np.zeros(o, int), 0))
        else:
            wt = self.g.tensor(f"{name}/w", w.shape, np.float32, w.astype(np.float32))
            bt = self.g.tensor(f"{name}/b", [o], np.float32, b.astype(np.float32))
        n, h, wd, _ = self._shape(x)
        out = self._tensor(name, [n, h, wd, o], self._quant(name))
        opts = fb.Conv2DOptionsT()
        opts.padding = fb.Padding.SAME if kh > 1 else fb.Padding.VALID
        opts.strideH = opts.strideW = opts.dilationHFactor = opts.dilationWFactor = 1
        opts.fusedActivationFunction = fb.ActivationFunctionType.NONE
        return self._op(fb.BuiltinOperator.CONV_2D, "CONV_2D", [x.index, wt, bt], out,
                        fb.BuiltinOptions.Conv2DOptions, opts, 3 if self.int8 else 1)

    def binary(self, code: int, label: str, a: _T, b: _T, name: str, quant=None) -> _T:
        out = self._tensor(name, self._shape(a), quant if quant is not None else self._quant(name))
        return self._op(code, label, [a.index, b.index], out, *builtin_options(code))

    def leaky_relu(self, x: _T, name: str) -> _T:
        return self._op(fb.BuiltinOperator.LEAKY_RELU, "LEAKY_RELU", [x.index],
                        self._tensor(name, self._shape(x), self._quant(name)),
                        *builtin_options(fb.BuiltinOperator.LEAKY_RELU, alpha=LEAK))

    def avg_pool(self, x: _T, k: int, name: str) -> _T:
        n, h, w, c = self._shape(x)
        opts = fb.Pool2DOptionsT()
        opts.padding = fb.Padding.VALID
        opts.strideH = opts.strideW = opts.filterHeight = opts.filterWidth = k
        return self._op(fb.BuiltinOperator.AVERAGE_POOL_2D, "AVERAGE_POOL_2D", [x.index],
                        self._tensor(name, [n, h // k, w // k, c], x.quant), fb.BuiltinOptions.Pool2DOptions, opts)

    def resize(self, x: _T, k: int, bilinear: bool, name: str) -> _T:
        n, h, w, c = self._shape(x)
        size = self.g.tensor(f"{name}/size", [2], np.int32, np.array([h * k, w * k], np.int32))
        out = self._tensor(name, [n, h * k, w * k, c], x.quant)
        if bilinear:
            opts = fb.ResizeBilinearOptionsT()
            opts.alignCorners, opts.halfPixelCenters = False, True
            return self._op(fb.BuiltinOperator.RESIZE_BILINEAR, "RESIZE_BILINEAR", [x.index, size], out,
                            fb.BuiltinOptions.ResizeBilinearOptions, opts, 3)
        opts = fb.ResizeNearestNeighborOptionsT()
        opts.alignCorners, opts.halfPixelCenters = False, False
        return self._op(fb.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR, "RESIZE_NEAREST_NEIGHBOR", [x.index, size], out,
                        fb.BuiltinOptions.ResizeNearestNeighborOptions, opts)

    def head(self, h: _T, const: np.ndarray, suffix: str) -> _T:
        """LOGISTIC(h + const): x_op (suffix '') or x_sm (suffix '_sm')."""
        h = self.binary(fb.BuiltinOperator.ADD, "ADD", h, self._const(f"h_const{suffix}", const), f"h_add{suffix}")
        return self._op(fb.BuiltinOperator.LOGISTIC, "LOGISTIC", [h.index],
                        self._tensor(f"x{suffix or '_op'}", self._shape(h), LOGISTIC_QUANT if self.int8 else None))

    # -- the stage ----------------------------------------------------------------------------------
    def run(self) -> tuple[int, int]:
        st, m = self.stage, self.stage.member
        s = st.size
        x = self._tensor("input", [1, s, s, 3], INPUT_QUANT if self.int8 else None)
        small = self.avg_pool(x, st.factor, "small") if st.factor > 1 else x
        const1, consth, consth_sm = (np.ascontiguousarray(c.transpose(0, 2, 3, 1)) for c in prototype_constants(st))
        h = self.conv(small, "e1_conv", m.enc1.weight[:, :3], None)
        h = self.binary(fb.BuiltinOperator.ADD, "ADD", h, self._const("e1_const", const1), "e1_add")
        h = self.avg_pool(self.leaky_relu(h, "e1_act"), 2, "e1_pool")
        h = self.avg_pool(self.leaky_relu(self.conv(h, "e2_conv", m.enc2.weight, m.enc2.bias), "e2_act"), 2, "e2_pool")
        h = self.resize(self.leaky_relu(self.conv(h, "d1_conv", m.dec1.weight, m.dec1.bias), "d1_act"), 2, False, "d1_up")
        h = self.resize(self.leaky_relu(self.conv(h, "d2_conv", m.dec2.weight, m.dec2.bias), "d2_act"), 2, False, "d2_up")
        channels = m.head.weight.shape[1] - 3
        h = self.conv(h, "h_conv", m.head.weight[:, :channels], None)
        x_op = self.head(h, consth, "")
        base = self.head(h, consth_sm, "_sm") if st.change == "differential" else small
        change = self.binary(fb.BuiltinOperator.SUB, "SUB", x_op, base, "change")
        if st.factor > 1:
            change = self.resize(change, st.factor, True, "change_up")
        if st.strength != 1.0:
            if self.int8:
                aq = (max(st.strength, 1e-3) / 127.0, 0)
                at = _T(self.g.tensor("strength", [1], np.int8, np.array([round(st.strength / aq[0])], np.int8),
                                      quant_params(*aq)), aq)
            else:
                at = _T(self.g.tensor("strength", [1], np.float32, np.full(1, st.strength, np.float32)), None)
            change = self.binary(fb.BuiltinOperator.MUL, "MUL", change, at, "scaled")
        out = self.binary(fb.BuiltinOperator.ADD, "ADD", x, change, "sum", OUTPUT_QUANT if self.int8 else None)
        if not self.int8:
            zero = _T(self.g.tensor("zero", [1], np.float32, np.zeros(1, np.float32)), None)
            one = _T(self.g.tensor("one", [1], np.float32, np.ones(1, np.float32)), None)
            out = self.binary(fb.BuiltinOperator.MAXIMUM, "MAXIMUM", out, zero, "clamp_lo")
            out = self.binary(fb.BuiltinOperator.MINIMUM, "MINIMUM", out, one, "out")
        return x.index, out.index


def calibration_ranges(stage: SanStage, faces: np.ndarray, batch: int = 64) -> dict[str, tuple[float, float]]:
    """(min, max) of every traced tensor over calibration faces (uint8 (N,S,S,3))."""
    if faces.ndim != 4 or faces.shape[1:] != (stage.size, stage.size, 3) or faces.dtype != np.uint8:
        raise SanModelError(f"calibration faces must be uint8 (N,{stage.size},{stage.size},3), got "
                            f"{faces.dtype} {faces.shape}")
    ranges: dict[str, tuple[float, float]] = {}
    for i in range(0, len(faces), batch):
        x = torch.from_numpy(faces[i:i + batch].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        for name, value in trace(stage, x).items():
            lo, hi = float(value.min()), float(value.max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(old[0], lo), max(old[1], hi))
    scaled = ranges.get("change_up", ranges["change"])
    ranges["scaled"] = (stage.strength * scaled[0], stage.strength * scaled[1])
    return ranges


def write_san_tflite(stage: SanStage, int8: bool = True, calib: np.ndarray | None = None,
                     metadata: dict | None = None) -> bytes:
    """The (unkeyed) stage as .tflite bytes; int8 needs calibration faces."""
    if int8 and (calib is None or len(calib) == 0):
        raise SanModelError("int8 quantisation needs calibration faces")
    low = _Lowering(stage, int8, calibration_ranges(stage, calib) if int8 else {})
    first, last = low.run()
    meta = {"kind": "san-stage", "input_shape": [stage.size, stage.size, 3], "strength": stage.strength,
            "change": stage.change, "dtype": "int8" if int8 else "float32", "keyed": False, "ops": low.ops, **(metadata or {})}
    return low.g.finish([first], [last], meta, description="keycam SAN stage")
