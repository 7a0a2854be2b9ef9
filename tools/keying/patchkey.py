"""Patch-aligned sensor keys (profile `stem-patch`) for models whose first layer is a patchify conv.

The sensor permutation moves every k x k patch of the frame (all channels) to a random slot of
t = C*k*k consecutive positions of the keyed vector and shuffles the patch's pixels inside the slot
(a different shuffle per slot; a pixel's C values stay side by side), followed by positive gains
and a bias that depend only on a value's place inside its patch (t secret gains and offsets shared
by all patches).

The keyed stem is then a GATHER plus a 1x1 convolution, both int8 and nearly as cheap as the plain
stem (the GATHER moves whole pixels, C bytes at a time). The GATHER brings every patch back to its
grid position in one secret within-patch order tau (the order of patch 0's slot), and the
convolution's weights W[:, tau] / gain absorb tau, the gains and the offsets. What the .tflite
reveals: the patch arrangement and each slot's shuffle relative to tau, in clear. The sparsity pattern of the
keyed stem as one matrix W1 A0^-1 reveals the same
(its rows are the patches, and matching weight columns across slots gives the relative shuffles),
so the GATHER form gives nothing away that the matrix form kept; the secret left is tau, the t
gains and offsets. Trade-off: patches stay whole, so the keyed frame is a jigsaw of scrambled
patches rather than a global scramble; see the attacks for what that costs.
"""
from __future__ import annotations

import numpy as np

from keys.drbg import Drbg
from keys.factors import Bias, Gain, Key, Permutation
from keys.generate import KeyConfig, gains
from tools.ir import Conv, Gather, Network


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
    """perm with keyed[slot * t + j] = x[perm[slot * t + j]]: patches to random slots, their k*k pixels
    shuffled inside the slot (a different shuffle per slot), each pixel's C values kept side by side."""
    c = shape[0]
    groups = patch_groups(shape, k).reshape(-1, c, k * k)           # (patches, channel, pixel)
    slots = len(groups)
    order = rng.child("slots").permutation(slots)
    pixels = np.argsort(rng.child("inner").uniform(slots * k * k).reshape(slots, k * k), axis=1, kind="stable")
    moved = np.take_along_axis(groups[order], pixels[:, None, :], axis=2)
    return moved.transpose(0, 2, 1).reshape(-1)                      # slot-major, pixel, then channel


def within_patch_index(shape: tuple[int, int, int], k: int) -> np.ndarray:
    """For every CHW pixel, its place (c, dy, dx) inside its patch, as c * k * k + dy * k + dx."""
    groups = patch_groups(shape, k)
    out = np.empty(groups.size, dtype=np.int64)
    out[groups] = np.arange(groups.shape[1])[None, :]
    return out


def patch_sensor_key(rng: Drbg, shape: tuple[int, int, int], k: int, config: KeyConfig) -> Key:
    """Sensor key: patch-aligned permutation, then gains and bias shared by all patches per within-patch
    place (so the keyed stem stays a convolution), mapping [0, 1] into [0, 1]."""
    t = shape[0] * k * k
    g = gains(rng.child("gain"), t, config.gain_range)
    b = rng.child("bias").uniform(t, 0.0, config.bias_max)
    scale = 1.0 / np.max(g + b)
    perm = patch_permutation(rng.child("patchperm"), shape, k)
    place = within_patch_index(shape, k)[perm]              # keyed position -> within-patch place it holds
    factors: list = [Permutation(perm), Gain(g[place] * scale)]
    if config.bias_max > 0:
        factors.append(Bias(b[place] * scale))
    return Key(int(np.prod(shape)), factors, "sensor")


def gather_stem(layer: Conv, in_shape: tuple[int, int, int], index: np.ndarray, scale: np.ndarray,
                offset: np.ndarray) -> tuple[Gather, Conv] | None:
    """The keyed patchify stem as GATHER + 1x1 conv, for a sensor key y = scale * x[index] + offset.

    Returns None when the key is not patch-aligned with shared per-place gains and offsets (the
    caller then keys the stem as one sparse matrix).
    """
    k = int(layer.weight.shape[2])
    t = in_shape[0] * k * k
    groups = patch_groups(in_shape, k)                          # (patches, t) plain pixels
    place = within_patch_index(in_shape, k)
    inv = np.empty_like(index)
    inv[index] = np.arange(len(index))
    slot0 = inv[groups[0, 0]] // t
    if not np.array_equal(np.sort(index[slot0 * t:(slot0 + 1) * t]), np.sort(groups[0])):
        return None                                              # slots do not hold whole patches
    tau = place[index[slot0 * t:(slot0 + 1) * t]]               # the secret order of patch 0's slot
    src = inv[groups[:, tau]]                                   # (patches, t): keyed position of place tau[j]
    s, c = scale[src], offset[src]
    if not (np.allclose(s, s[:1]) and np.allclose(c, c[:1])):
        return None
    s, c = s[0], c[0]
    w = layer.weight.reshape(len(layer.weight), -1)[:, tau] / s[None, :]
    bias = layer.bias - w @ c
    ho, wo = in_shape[1] // k, in_shape[2] // k
    return (Gather(src.T.reshape(-1), (t, ho, wo)),
            Conv(w.reshape(w.shape + (1, 1)), bias, (1, 1), (0, 0, 0, 0), layer.act, layer.alpha))
