"""Generators for generalized stochastic keys (Key-Nets, BMVC 2020), all driven by a `Drbg`.

Sensor key A0 = normalise(bias + gain * permute(mix(x))) (or `stages` rounds of mix + permute before
the gains): linear, invertible, non-negative, mapping intensities in [0, 1] into [0, 1] so the ADC never
clips. Layer keys are positive generalized permutations (they commute with ReLU / LeakyReLU); the
optional output key is a dense mixing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keys.drbg import Drbg
from keys.factors import Bias, ChannelGenPerm, DenseMix, Gain, Key, Permutation, TileMix


@dataclass(frozen=True)
class KeyConfig:
    """Tunable key parameters (the privacy/cost knobs)."""
    gain_range: tuple[float, float] = (0.5, 2.0)
    bias_max: float = 0.1            # sensor key only, as a fraction of full scale
    permutation: str = "global"      # global | hierarchical | none
    block: int = 4                   # block size of the hierarchical permutation
    tile: int = 0                    # sensor mixing inside tile x tile tiles (0 = no tile mixing)
    scatter: int = 0                 # sensor mixing inside random groups of this many scattered pixels (0 = none)
    mix_weight: float = 0.7          # weight of the dominant permutation in each group (> 0.5: invertible)
    mix_terms: int = 2               # number of extra permutations mixed into each group
    mixing: str = "dominant"         # dominant: a permutation of weight mix_weight plus mix_terms others;
    #                                  multiplex: secret 0/1 matrices, about half ones, condition-bounded
    cond_factor: float = 1.5         # multiplex: condition number <= cond_factor * sqrt(group size + 1)
    stages: int = 1                  # rounds of (mixing, global permutation); 2: a keyed pixel sees ~g^2 pixels

    def __post_init__(self):
        lo, hi = self.gain_range
        if not 0 < lo <= hi:
            raise ValueError(f"gain range must satisfy 0 < low <= high, got {self.gain_range}")
        if self.permutation not in ("global", "hierarchical", "none"):
            raise ValueError(f"permutation must be global, hierarchical or none, got {self.permutation!r}")
        if not 0.5 < self.mix_weight <= 1.0:
            raise ValueError("mix_weight must be in (0.5, 1] so every tile stays invertible")
        if self.bias_max < 0 or self.tile < 0 or self.scatter < 0 or self.block < 1 or self.mix_terms < 1:
            raise ValueError("bias_max, tile and scatter must be >= 0, block and mix_terms >= 1")
        if self.tile > 1 and self.scatter > 1:
            raise ValueError("choose tile mixing or scattered mixing, not both")
        if self.mixing not in ("dominant", "multiplex"):
            raise ValueError(f"mixing must be dominant or multiplex, got {self.mixing!r}")
        group = self.scatter or self.tile * self.tile
        if self.mixing == "multiplex" and (group < 3 or group & (group + 1)):
            raise ValueError(f"multiplex mixing needs groups of 2**m - 1 >= 3 pixels, got {group}")
        if self.cond_factor < 1.0 or self.stages < 1:
            raise ValueError("cond_factor must be >= 1 and stages >= 1")
        if self.stages > 1 and (self.scatter < 2 or self.permutation != "global"):
            raise ValueError("several mixing stages need scattered mixing and the global permutation")


def gains(rng: Drbg, n: int, gain_range: tuple[float, float]) -> np.ndarray:
    """n log-uniform positive gains in gain_range."""
    lo, hi = gain_range
    return np.exp(rng.uniform(n, np.log(lo), np.log(hi))) if hi > lo else np.full(n, float(lo))


def hierarchical_permutation(rng: Drbg, shape: tuple[int, int, int], block: int) -> np.ndarray:
    """Shuffle b x b blocks across the image, then pixels inside each block (per channel alike).

    Blocks are padded conceptually; the permutation is over the C*H*W indices in CHW order.
    """
    c, h, w = shape
    index = np.arange(c * h * w).reshape(c, h, w)
    bh, bw = -(-h // block), -(-w // block)
    cells = [index[:, i * block:(i + 1) * block, j * block:(j + 1) * block].reshape(c, -1)
             for i in range(bh) for j in range(bw)]
    order = rng.permutation(len(cells))
    out = []
    for k in order:
        cell = cells[k]
        inner = rng.permutation(cell.shape[1])
        out.append(cell[:, inner])
    # positions are refilled block by block in the original geometry
    perm = np.empty(c * h * w, dtype=np.int64)
    for dst, src in zip(cells, out):
        if dst.shape == src.shape:
            perm[dst.reshape(-1)] = src.reshape(-1)
        else:  # edge blocks of different size keep their own pixels, shuffled
            perm[dst.reshape(-1)] = dst.reshape(-1)[rng.permutation(dst.size)]
    return perm


def tile_groups(shape: tuple[int, int, int], tile: int) -> np.ndarray:
    """Index groups of all full tile x tile tiles of each channel (CHW order)."""
    c, h, w = shape
    index = np.arange(c * h * w).reshape(c, h, w)
    groups = [index[ch, i:i + tile, j:j + tile].reshape(-1)
              for ch in range(c) for i in range(0, h - tile + 1, tile) for j in range(0, w - tile + 1, tile)]
    return np.array(groups, dtype=np.int64)


def mixing_matrices(rng: Drbg, count: int, t: int, config: KeyConfig) -> np.ndarray:
    """`count` invertible non-negative t x t matrices with rows summing to 1: `multiplex_matrix` each, or
    (dominant) doubly-stochastic w0 * Q0 + (1 - w0) * mean(Q1..Qk), Q random permutations."""
    if config.mixing == "multiplex":
        bound = config.cond_factor * np.sqrt(t + 1.0)
        return np.stack([multiplex_matrix(rng.child(f"group{k}"), t, bound) for k in range(count)])
    eye = np.eye(t)
    mats = np.empty((count, t, t))
    rest = (1.0 - config.mix_weight) / config.mix_terms
    for k in range(count):
        m = config.mix_weight * eye[rng.permutation(t)]
        for _ in range(config.mix_terms):
            m += rest * eye[rng.permutation(t)]
        mats[k] = m
    return mats


def s_matrix(t: int) -> np.ndarray:
    """The t x t 0/1 S-matrix (t = 2**m - 1) from the Sylvester Hadamard matrix: (t + 1) / 2 ones per row,
    condition number sqrt(t + 1) once rows are normalised, the best a non-negative weighing design can have
    (Harwit & Sloane, Hadamard transform optics)."""
    h = np.ones((1, 1))
    while len(h) < t + 1:
        h = np.block([[h, h], [h, -h]])
    return (1.0 - h[1:, 1:]) / 2.0


def row_condition(m: np.ndarray) -> float:
    """Condition number of m with its rows normalised to sum 1 (the mixing the optics applies)."""
    return float(np.linalg.cond(m / m.sum(axis=1, keepdims=True)))


def multiplex_matrix(rng: Drbg, t: int, bound: float) -> np.ndarray:
    """A secret non-negative t x t mixing: an S-matrix with shuffled rows and columns, then 4t proposed flips
    of single entries, each kept when every row keeps a one and the row-normalised condition number stays
    <= bound (so 8-bit ADC noise is amplified at most `bound` times). Rows sum to 1: [0, 1] maps into [0, 1]."""
    m = s_matrix(t)[rng.child("rows").permutation(t)][:, rng.child("cols").permutation(t)]
    picks = np.minimum((rng.child("flips").uniform(8 * t) * t).astype(np.int64), t - 1).reshape(-1, 2)
    for i, j in picks:
        m[i, j] = 1.0 - m[i, j]
        if not m[i].any() or row_condition(m) > bound:
            m[i, j] = 1.0 - m[i, j]
    return m / m.sum(axis=1, keepdims=True)


def tile_mixing(rng: Drbg, shape: tuple[int, int, int], config: KeyConfig) -> TileMix:
    """Doubly-stochastic mixing inside each tile x tile tile of each channel."""
    groups = tile_groups(shape, config.tile)
    return TileMix(groups, mixing_matrices(rng, len(groups), groups.shape[1], config))


def scattered_mixing(rng: Drbg, n: int, config: KeyConfig) -> TileMix:
    """Mixing (`mixing_matrices`) inside random groups of `config.scatter` pixels spread over the frame.

    Unlike tiles, the groups form no grid: the keyed first layer's support pattern then shows which
    keyed pixels share a group, but not where a group's pixels lie relative to each other. The last
    n mod scatter pixels (in the random order) stay unmixed.
    """
    s = config.scatter
    order = rng.child("groups").permutation(n)
    groups = order[:n - n % s].reshape(-1, s)
    return TileMix(groups, mixing_matrices(rng.child("mix"), len(groups), s, config))


def sensor_key(rng: Drbg, shape: tuple[int, int, int], config: KeyConfig) -> Key:
    """The sensor key A0 for frames of `shape` (C, H, W); maps [0, 1] into [0, 1]."""
    n = int(np.prod(shape))
    factors: list = []
    if config.tile > 1:
        factors.append(tile_mixing(rng.child("tilemix"), shape, config))
    elif config.scatter > 1:
        factors.append(scattered_mixing(rng.child("scatter"), n, config))
    for stage in range(1, config.stages):         # stage 0 keeps its historical labels (same keys as before)
        factors.append(Permutation(rng.child(f"perm{stage}").permutation(n)))
        factors.append(scattered_mixing(rng.child(f"scatter{stage}"), n, config))
    if config.permutation == "global":
        factors.append(Permutation(rng.child("perm").permutation(n)))
    elif config.permutation == "hierarchical":
        factors.append(Permutation(hierarchical_permutation(rng.child("hperm"), shape, config.block)))
    g = gains(rng.child("gain"), n, config.gain_range)
    b = rng.child("bias").uniform(n, 0.0, config.bias_max)
    scale = 1.0 / np.max(g + b)          # mixing rows sum to 1 and keep [0,1]; this keeps gain+bias in it
    factors.append(Gain(g * scale))
    if config.bias_max > 0:
        factors.append(Bias(b * scale))
    return Key(n, factors, "sensor")


def spatial_layer_key(rng: Drbg, size: int, config: KeyConfig, name: str) -> Key:
    """A positive generalized permutation over all units of a layer (global spatial + channel shuffle)."""
    return Key(size, [Permutation(rng.child("perm").permutation(size)),
                      Gain(gains(rng.child("gain"), size, config.gain_range))], name)


def channel_layer_key(rng: Drbg, channels: int, spatial: int, config: KeyConfig, name: str) -> Key:
    """A per-channel positive generalized permutation: a keyed conv stays a conv."""
    return Key(channels * spatial, [ChannelGenPerm(rng.child("perm").permutation(channels),
                                                   gains(rng.child("gain"), channels, config.gain_range),
                                                   spatial)], name)


def output_key(rng: Drbg, n: int, config: KeyConfig) -> Key:
    """Dense output key: random orthogonal times positive gains (condition number <= gain ratio)."""
    u1, u2 = rng.uniform(n * n), rng.uniform(n * n)
    gauss = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    q, r = np.linalg.qr(gauss.reshape(n, n))
    q = q * np.sign(np.diag(r))
    g = gains(rng.child("gain"), n, config.gain_range)
    return Key(n, [DenseMix(g[:, None] * q)], "output")
