"""Adaptive step of the structure attack: undo sensor-side mixing with a spatial prior.

Mixing keys (tiled, scatterN) leave groups of keyed pixels the support pattern cannot tell apart.
An attacker who also knows WHERE a group's pixels lie (the tile layout for tiled keys; for scattered
groups this module is handed the true positions, so its result is an upper bound on what the support
pattern plus keyed frames can give) can still unmix: natural images are smooth, so each plain pixel
is predicted by the mean of its 8 neighbours. Starting from the group mean, every group's keyed
values are regressed (least squares, with intercept) onto the neighbour-mean of its positions,
over many unlabelled keyed frames, and the estimate is refined a few times.
"""
from __future__ import annotations

import numpy as np

ITERATIONS = 6


def neighbour_lists(h: int, w: int) -> list[np.ndarray]:
    """For each grid position y * w + x, the positions of its up-to-8 neighbours."""
    out = []
    for y in range(h):
        for x in range(w):
            out.append(np.array([(y + dy) * w + x + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                                 if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w]))
    return out


def _with_intercept(values: np.ndarray) -> np.ndarray:
    return np.c_[values, np.ones(len(values))]


def unmix(fit: np.ndarray, test: np.ndarray, groups: list[np.ndarray], positions: list[np.ndarray],
          shape: tuple[int, int], iterations: int = ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruct `test` frames from normalised keyed values (frames x keyed pixels).

    groups[k] are keyed-pixel columns, positions[k] the plain positions they cover (same length);
    `fit` are keyed frames the attacker captured (no plain frames needed). Returns the reconstructed
    test frames (frames x H*W, each position scaled to [0, 1] over the fitting frames) and, per keyed
    column, the position whose regression weights it most (the attacker's pixel assignment).
    """
    h, w = shape
    nbrs = neighbour_lists(h, w)
    est_fit, est_test = np.zeros((len(fit), h * w)), np.zeros((len(test), h * w))
    for g, p in zip(groups, positions):
        est_fit[:, p] = fit[:, g].mean(axis=1, keepdims=True)
        est_test[:, p] = test[:, g].mean(axis=1, keepdims=True)
    assigned = np.arange(fit.shape[1])
    for g, p in zip(groups, positions):
        assigned[g] = np.sort(p)        # no information inside a group: a fixed guess
    for _ in range(iterations):
        target = np.stack([est_fit[:, nb].mean(axis=1) for nb in nbrs], axis=1)
        for g, p in zip(groups, positions):
            coef, *_ = np.linalg.lstsq(_with_intercept(fit[:, g]), target[:, p], rcond=None)
            est_fit[:, p] = _with_intercept(fit[:, g]) @ coef
            est_test[:, p] = _with_intercept(test[:, g]) @ coef
            assigned[g] = p[np.argmax(np.abs(coef[:-1]), axis=1)]
        lo, hi = est_fit.min(axis=0), est_fit.max(axis=0)
        span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
        est_fit, est_test = (est_fit - lo) / span, (est_test - lo) / span
    return np.clip(est_test, 0.0, 1.0), assigned
