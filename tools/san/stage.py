"""A SAN stage (tools.san.export.SanStage) as a graph of the project's IR, keyed and written by the shared
keying (tools.keying) and writer (tools.tflite.writer) like every other model.

The graph (NCHW, the concat with the prototype folded: the conv of the prototype half plus the bias is a
per-position constant, a Shift):

    x --AvgPool(f)--> small                                         (f = crop size / 32; absent when f = 1)
    small --Conv(image half of enc1)--> Shift(prototype term) --LeakyReLU--> AvgPool 2
          --Conv+LeakyReLU--> AvgPool 2 --Conv+LeakyReLU--> Resize nearest x2 --Conv+LeakyReLU--> Resize x2
          --Conv(feature half of the head)--> Shift(opposite prototype + bias) = h --Sigmoid--> x_op
                                              h --Shift(same - opposite)--Sigmoid--> x_sm     (differential)
    Add(x_op, -(small | x_sm)) --Resize bilinear(f)--> Add(x, strength * .) --Clip[0, 1]--> out

The label-free stage (change label_free) has no sigmoid: h (the neutral prototype folded into its constant) is
the change itself, h --Resize bilinear(f)--> Add(x, strength * .) --Clip: one stage for every face, no gender
anywhere in it.

Written unkeyed, the writer lowers it to AVERAGE_POOL_2D, CONV_2D, ADD, LEAKY_RELU, RESIZE_*, LOGISTIC, SUB,
MUL; int8 calibrated on faces, input and output int8 at 1/255 (the clamp is the last ADD's saturation).

Keyed (`write_keyed_san_tflite`): the input and output carry the downstream face model's sensor key K, a pixel
permutation (sigmoid and clamp commute only with permutations); every hidden tensor gets a positive
generalized permutation over all its units from a fresh secret (never stored); sigmoid inputs get
permutations. The shared keying turns every linear op into a sparse matrix in keyed coordinates (a nearest
upsample is composed into the conv after it, a per-position constant into the bias before it) and the writer
lowers those int8 as GATHER + DEPTHWISE_CONV_2D (tools.tflite.sparse_int8) or float32 as CSR FULLY_CONNECTED.
The keyed frame arrives as the HWC image of the keyed CHW vector; the written model takes and returns it so.
"""
from __future__ import annotations

import secrets

import numpy as np
import torch
import torch.nn.functional as F

from keys.drbg import Drbg
from keys.factors import Key
from keys.generate import KeyConfig
from keys.keyset import KeySet
from keys.profiles import Profile
from tools.ir import INPUT, Activation, Add, AvgPool, Conv, Dense, Flatten, Network, Resize, Shift, Unflatten
from tools.keying.keyed import draw_layer_keys, key_network
from tools.keying.rules import KeyPlan
from tools.san.errors import SanModelError
from tools.san.export import SanStage
from tools.san.key_checks import permutation_of
from tools.san.nets import LEAK
from tools.tflite.writer import write_tflite

INT8_GAIN_RANGE = (0.5, 2.0)   # hidden gains of the int8 stage: KeyConfig's; [0.25, 4] triples the int8 error (README)


@torch.no_grad()
def prototype_constants(stage: SanStage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-position constants (C,H,W): enc1's prototype half + bias, and the head's prototype half + bias with
    the opposite and with the same prototype."""
    m = stage.member
    const1 = F.conv2d(stage.same, m.enc1.weight[:, 3:], m.enc1.bias, padding=1)
    channels = m.head.weight.shape[1] - 3
    heads = (F.conv2d(p, m.head.weight[:, channels:], m.head.bias) for p in (stage.opposite, stage.same))
    return tuple(c[0].numpy().astype(np.float64) for c in (const1, *heads))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def stage_network(stage: SanStage) -> Network:
    """The stage as an IR network on (3, S, S) frames in [0, 1] (see the module doc)."""
    m, f = stage.member, stage.factor
    layers: list = []

    def add(layer, *inputs: int) -> int:
        layer.inputs = inputs
        layers.append(layer)
        return len(layers) - 1

    def conv(module, name: str, weight=None, act: str = "leaky_relu") -> Conv:
        w = _np(module.weight if weight is None else weight)
        b = np.zeros(len(w)) if weight is not None else _np(module.bias)
        pad = w.shape[-1] // 2
        return Conv(w, b, pads=(pad,) * 4, act=act, alpha=LEAK if act != "none" else 0.0, name=name)

    const1, consth, consth_sm = prototype_constants(stage)
    small = add(AvgPool((f, f), (f, f), name="down"), INPUT) if f > 1 else INPUT
    h = add(conv(m.enc1, "enc1", m.enc1.weight[:, :3], "none"), small)
    h = add(Shift(const1, name="enc1_prototype"), h)
    h = add(Activation("leaky_relu", LEAK, name="enc1_act"), h)
    h = add(AvgPool((2, 2), (2, 2), name="pool1"), h)
    h = add(AvgPool((2, 2), (2, 2), name="pool2"), add(conv(m.enc2, "enc2"), h))
    h = add(Resize((2, 2), "nearest", name="up1"), add(conv(m.dec1, "dec1"), h))
    h = add(Resize((2, 2), "nearest", name="up2"), add(conv(m.dec2, "dec2"), h))
    channels = m.head.weight.shape[1] - 3
    h = add(conv(m.head, "head", m.head.weight[:, :channels], "none"), h)
    h = add(Shift(consth, name="head_prototype"), h)
    if stage.label_free:                                  # the head's linear output is the change
        change = h
    else:
        x_op = add(Activation("sigmoid", name="x_op"), h)
        base = add(Activation("sigmoid", name="x_sm"), add(Shift(consth_sm - consth, name="head_same"), h)) \
            if stage.change == "differential" else small
        change = add(Add((1.0, -1.0), name="change"), x_op, base)
    if f > 1:
        change = add(Resize((f, f), "bilinear", name="change_up"), change)
    out = add(Add((1.0, float(stage.strength)), name="sum"), INPUT, change)
    add(Activation("clip", lo=0.0, hi=1.0, name="clamp"), out)
    return Network((3, stage.size, stage.size), layers, name="san-stage")


def faces_chw(faces: np.ndarray, size: int) -> np.ndarray:
    """uint8 faces (N, S, S, 3) as float CHW vectors (N, 3 S S) in [0, 1]; a SanModelError for anything else."""
    if faces.ndim != 4 or faces.shape[1:] != (size, size, 3) or faces.dtype != np.uint8:
        raise SanModelError(f"calibration faces must be uint8 (N,{size},{size},3), got {faces.dtype} {faces.shape}")
    return faces.transpose(0, 3, 1, 2).reshape(len(faces), -1).astype(np.float64) / 255.0


def _write(net: Network, stage: SanStage, int8: bool, calib: np.ndarray | None, keyed: bool, extra: dict) -> bytes:
    """The writer's bytes with the stage's metadata (the writer adds its per-op report under 'ops')."""
    meta = {"kind": "san-stage", "input_shape": [stage.size, stage.size, 3], "strength": stage.strength,
            "change": stage.change, "label_free": stage.label_free, "gender": stage.gender_name,
            "faces": stage.faces, "dtype": "int8" if int8 else "float32", "keyed": keyed, **extra}
    return write_tflite(net, int8=int8, calib=calib, metadata=meta, sparse_ell=keyed)[0]


def write_san_tflite(stage: SanStage, int8: bool = True, calib: np.ndarray | None = None,
                     metadata: dict | None = None) -> bytes:
    """The (unkeyed) stage as .tflite bytes; int8 needs calibration faces (uint8 (N, S, S, 3): the stage's gender,
    or both genders for the label-free stage)."""
    if int8 and (calib is None or len(calib) == 0):
        raise SanModelError("int8 quantisation needs calibration faces")
    frames = faces_chw(calib, stage.size) if int8 else None
    return _write(stage_network(stage), stage, int8, frames, False, metadata or {})


def keyed_stage_network(stage: SanStage, key: Key, secret: bytes,
                        gain_range: tuple[float, float] = KeyConfig.gain_range) -> Network:
    """The stage keyed with `key` (a pixel permutation) on input and output, hidden keys drawn from `secret`
    with gains in `gain_range`, as an IR network on keyed frames (3, S, S): the keyed CHW vector reshaped."""
    permutation_of(key, 3 * stage.size * stage.size)
    net = stage_network(stage)
    prof = Profile("san-keyed", True, layers=KeyConfig(gain_range=gain_range), grouped_units=True,
                   description="SAN stage: input and output keyed with K, hidden layers over all units")
    plan = KeyPlan(net, prof, output_from_input=True)
    keyset = KeySet("san-stage", "san", prof.name, key, draw_layer_keys(Drbg(secret, "san-stage"), plan, key, None),
                    None, {"output_from_input": True})
    keyed = key_network(net, keyset, profile=prof)
    shape = tuple(net.input_shape)
    layers = [Flatten(inputs=(INPUT,), name="frame")]
    for layer in keyed.layers:
        layer.inputs = tuple(j + 1 for j in layer.inputs)           # keyed INPUT (-1) becomes the Flatten (0)
        layers.append(layer)
    layers.append(Unflatten(shape, name="frame_out"))
    return Network(shape, layers, name="san-stage-keyed")


def write_keyed_san_tflite(stage: SanStage, key: Key, metadata: dict | None = None, secret: bytes | None = None,
                           int8: bool = False, calib_faces: np.ndarray | None = None,
                           gain_range: tuple[float, float] | None = None) -> bytes:
    """The stage keyed with the face model's sensor key `key` (a pixel permutation) on input and output, as
    .tflite bytes; hidden keys from `secret` (a fresh random one when None; never stored), their gains in
    `gain_range` (default KeyConfig's, INT8_GAIN_RANGE for int8).

    float32 (`int8` False): CSR FULLY_CONNECTED sparse layers. int8: GATHER + DEPTHWISE_CONV_2D sparse layers,
    per-tensor activation ranges calibrated on `calib_faces` (uint8 (N,S,S,3) plain faces, keyed with `key`
    here; both genders for the label-free stage), input and output int8 with scale 1/255, zero point -128."""
    if int8 and (calib_faces is None or len(calib_faces) == 0):
        raise SanModelError("the int8 keyed stage needs calibration faces")
    frames = key.apply(faces_chw(calib_faces, stage.size)) if int8 else None
    gain_range = gain_range or (INT8_GAIN_RANGE if int8 else KeyConfig.gain_range)
    net = keyed_stage_network(stage, key, secret or secrets.token_bytes(32), gain_range)
    extra = {"input_key_fingerprint": key.fingerprint, "output_key_fingerprint": key.fingerprint,
             "nnz": int(sum(layer.weight.nnz for layer in net.layers if isinstance(layer, Dense) and layer.sparse)),
             "hidden_keys": "positive generalized permutations over all units of every layer, in the weights",
             "hidden_gain_range": list(gain_range), **(metadata or {})}
    return _write(net, stage, int8, frames, True, extra)
