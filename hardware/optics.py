"""Fiber-bundle faceplate optics as one sparse linear operator on a frame (H, W).

Modelled after the Key-Nets reference simulation: the image is supersampled, a hexagonal lattice of
fiber cores (optionally jittered) samples it, light falling on the cladding is lost, each core
leaks a fraction of its light into each of its neighbours (crosstalk), the output face is blurred
onto the sensor and binned back to the pixel grid. Every step is linear, so the whole optics is a
sparse matrix built once per frame shape and normalised so a uniform white frame averages
`transmission`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from base.schema import NON_NEGATIVE, POSITIVE, Rule, Section, setting


@dataclass(frozen=True)
class FiberOptics(Section):
    """Geometry and losses of a coherent fiber bundle; lengths in supersampled sub-pixels."""

    supersample: int = setting(4, rule=Rule(lambda v: v >= 1, "must be >= 1"))   # sub-pixels per sensor pixel and axis
    core_pitch: float = setting(4.0, rule=POSITIVE)       # distance between neighbouring core centres
    core_radius: float = setting(1.6, rule=POSITIVE)      # light-guiding core radius (the rest of each cell is cladding)
    crosstalk: float = setting(0.05, rule=Rule(lambda v: 0 <= v < 1 / 6, "must be in [0, 1/6) (6 neighbours)"))
    # crosstalk: fraction of a core's light leaking into each neighbouring core
    blur_sigma: float = setting(1.0, rule=NON_NEGATIVE)   # Gaussian blur of the output face onto the sensor (0: none)
    jitter: float = setting(0.0, rule=NON_NEGATIVE)       # max random offset of each core centre
    transmission: float = setting(1.0, rule=Rule(lambda v: 0 < v <= 1, "must be in (0, 1]"))  # mean response to white
    seed: int = 0

    def matrix(self, shape: tuple[int, int]) -> sp.csr_matrix:
        """The (H*W, H*W) operator mapping a flattened frame to the sensor behind the bundle."""
        h, w = shape
        s = self.supersample
        big_h, big_w = h * s, w * s
        ys, xs = np.mgrid[0:big_h, 0:big_w]
        pix = np.column_stack([ys.ravel() + 0.5, xs.ravel() + 0.5])
        n_big = pix.shape[0]
        up = sp.csr_matrix((np.ones(n_big), (np.arange(n_big), (ys.ravel() // s) * w + xs.ravel() // s)),
                           shape=(n_big, h * w))
        cores = self._cores(big_h, big_w)
        tree = cKDTree(cores)
        dist, nearest = tree.query(pix)
        inside = dist <= self.core_radius
        counts = np.bincount(nearest, minlength=len(cores)).astype(np.float64)
        collect = sp.csr_matrix((inside / counts[nearest], (nearest, np.arange(n_big))),
                                shape=(len(cores), n_big))
        pairs = tree.query_pairs(1.2 * self.core_pitch, output_type="ndarray")
        adj = sp.csr_matrix((np.ones(2 * len(pairs)), (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
                            shape=(len(cores), len(cores)))
        degree = np.asarray(adj.sum(axis=1)).ravel()
        xtalk = sp.diags(1.0 - self.crosstalk * degree) + self.crosstalk * adj
        emit = sp.csr_matrix((inside.astype(np.float64), (np.arange(n_big), nearest)), shape=(n_big, len(cores)))
        blur = sp.kron(self._gauss(big_h), self._gauss(big_w), format="csr")
        down = sp.kron(self._bin(h), self._bin(w), format="csr")
        m = (down @ blur @ emit @ xtalk @ collect @ up).tocsr()
        white = m @ np.ones(h * w)
        return (m * (self.transmission / white.mean())).tocsr()

    def _cores(self, big_h: int, big_w: int) -> np.ndarray:
        """Hexagonal lattice of core centres covering the supersampled frame plus a margin."""
        p = self.core_pitch
        row_step = p * np.sqrt(3) / 2
        rows = np.arange(-row_step, big_h + 2 * row_step, row_step)
        centres = [(y, x + (p / 2 if i % 2 else 0.0)) for i, y in enumerate(rows)
                   for x in np.arange(-p, big_w + 2 * p, p)]
        out = np.array(centres) + p / 2
        if self.jitter:
            out += np.random.default_rng(self.seed).uniform(-self.jitter, self.jitter, out.shape)
        return out

    def _gauss(self, n: int) -> sp.csr_matrix:
        if self.blur_sigma == 0:
            return sp.identity(n, format="csr")
        radius = int(np.ceil(3 * self.blur_sigma))
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (offsets / self.blur_sigma) ** 2)
        m = sp.diags([np.full(n - abs(o), k) for o, k in zip(offsets, kernel)], offsets, shape=(n, n), format="csr")
        return sp.diags(1.0 / np.asarray(m.sum(axis=1)).ravel()) @ m

    def _bin(self, n: int) -> sp.csr_matrix:
        s = self.supersample
        return sp.kron(sp.identity(n), np.full((1, s), 1.0 / s), format="csr")
