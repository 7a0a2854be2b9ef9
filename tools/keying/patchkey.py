"""Patch-aligned sensor keys (profile `stem-patch`) for models whose first layer is a patchify conv.

The sensor permutation moves every k x k patch of the frame (all channels) to a random slot of
C*k*k consecutive positions of the keyed vector and shuffles the patch's values inside the slot
(a different shuffle per slot), followed by per-pixel positive gains and bias like the stem key.
The keyed stem W1 A0^-1 then reads each output position from one slot: with C*k*k a multiple of
16 it is exactly 1x16-block sparse, which TFLite runs in int8 (a global permutation scatters the
same weights over single columns and leaves the stem as a float CSR layer, ~6x larger).
Trade-off: patches stay whole inside a slot, so the keyed frame is a jigsaw of scrambled patches
rather than a global scramble; see the attacks for what that costs.
"""
from __future__ import annotations

import numpy as np

from keys.drbg import Drbg
from keys.factors import Bias, Gain, Key, Permutation
from keys.generate import KeyConfig, gains
from tools.ir import Conv, Network



def patch_size(net: Network) -> int:
    """Side k of the stem's patches; raises ValueError unless layer 0 is a k x k / stride-k conv tiling the frame."""
    stem = next((layer for layer in net.layers if isinstance(layer, Conv)), None)
    c, h, w = net.input_shape if len(net.input_shape) == 3 else (0, 0, 0)
    if stem is None or stem is not net.layers[0] or any(stem.pads):
        raise ValueError("a patch-aligned key needs a network whose first layer is an unpadded convolution")
    kh, kw = stem.weight.shape[2:]
    if kh != kw or stem.stride != (kh, kw) or h % kh or w % kw:
        raise ValueError(f"a patch-aligned key needs a patchify stem (kernel = stride, tiling the frame); "
                         f"layer 0 has kernel {kh}x{kw}, stride {stem.stride}, input {h}x{w}")
    return int(kh)


def patch_groups(shape: tuple[int, int, int], k: int) -> np.ndarray:
    """(patches, C*k*k): the CHW indices of every k x k patch (all channels), patches in raster order."""
    c, h, w = shape
    index = np.arange(c * h * w).reshape(c, h // k, k, w // k, k)
    return index.transpose(1, 3, 0, 2, 4).reshape((h // k) * (w // k), c * k * k)


def patch_permutation(rng: Drbg, shape: tuple[int, int, int], k: int) -> np.ndarray:
    """perm with keyed[slot * t + j] = x[perm[slot * t + j]]: patches to random slots, shuffled inside."""
    groups = patch_groups(shape, k)
    slots, t = groups.shape
    order = rng.child("slots").permutation(slots)
    inner = np.argsort(rng.child("inner").uniform(slots * t).reshape(slots, t), axis=1, kind="stable")
    return np.take_along_axis(groups[order], inner, axis=1).reshape(-1)


def patch_sensor_key(rng: Drbg, shape: tuple[int, int, int], k: int, config: KeyConfig) -> Key:
    """Sensor key: patch-aligned permutation, per-pixel gains and bias, mapping [0, 1] into [0, 1]."""
    n = int(np.prod(shape))
    g = gains(rng.child("gain"), n, config.gain_range)
    b = rng.child("bias").uniform(n, 0.0, config.bias_max)
    scale = 1.0 / np.max(g + b)
    factors: list = [Permutation(patch_permutation(rng.child("patchperm"), shape, k)), Gain(g * scale)]
    if config.bias_max > 0:
        factors.append(Bias(b * scale))
    return Key(n, factors, "sensor")
