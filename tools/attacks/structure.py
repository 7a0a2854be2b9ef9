"""Attack 1, sparsity structure: recover the sensor's pixel arrangement from the keyed .tflite alone.

Columns of the first keyed layer are keyed pixels, rows are conv outputs. Each row's support is the
keyed image of a 3x3 window, so two keyed pixels are grid neighbours when enough rows share them. With
tile mixing in the sensor key, all pixels of a tile share one support: the attack then recovers the
tile arrangement and must guess inside each tile. Keyed frames serve only to normalise each keyed
pixel's gain and offset (per-pixel min/max over the frames).

With mixing keys, an adaptive step (tools.attacks.unmix) then undoes the mixing inside each group
with a spatial prior, given the group's true plain positions: an upper bound for this attacker.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tools.attacks.grid import LayoutFailed, adjacency, layout, symmetries
from tools.attacks.metrics import similarity
from tools.attacks.target import AttackError, Target
from tools.attacks.tflite_read import first_sparse_layer
from tools.attacks.unmix import ITERATIONS, unmix

KERNEL_WINDOW = 9          # 3x3 conv: the largest row support at pixel level
MIN_SHARED_WINDOWS = 4     # 3x3 'same' conv: Chebyshev-1 pixel pairs share >= 4 windows, farther pairs <= 3


def column_groups(w: sp.csr_matrix) -> list[np.ndarray]:
    """Columns with identical row support, grouped (a group = pixels the attack cannot tell apart)."""
    csc = (w != 0).tocsc()
    csc.sort_indices()
    groups: dict[bytes, list[int]] = {}
    for j in range(csc.shape[1]):
        groups.setdefault(csc.indices[csc.indptr[j]:csc.indptr[j + 1]].tobytes(), []).append(j)
    return [np.array(g) for g in groups.values()]


def _unique_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    m = (m != 0).astype(np.int32).tocsr()
    m.sort_indices()
    seen = {m.indices[m.indptr[i]:m.indptr[i + 1]].tobytes(): i for i in range(m.shape[0])}
    return m[sorted(seen.values())]


def merge_into_tiles(w: sp.csr_matrix, groups: list[np.ndarray], tiles: int) -> list[np.ndarray] | None:
    """Merge column groups into `tiles` tiles: the largest groups anchor tiles, every smaller group joins
    the anchor whose row support overlaps its own most. None when the tiles come out unequal."""
    if len(groups) < tiles:
        return None
    order = sorted(range(len(groups)), key=lambda g: -len(groups[g]))
    csc = (w != 0).tocsc()
    rows = [set(csc[:, g[0]].indices.tolist()) for g in groups]
    merged = {a: list(groups[a]) for a in order[:tiles]}
    for g in order[tiles:]:
        best = max(merged, key=lambda a: len(rows[g] & rows[a]))
        merged[best].extend(groups[g])
    out = [np.array(sorted(m)) for m in merged.values()]
    return out if len({len(m) for m in out}) == 1 else None


def _layout_tiles(w: sp.csr_matrix, tiles: list[np.ndarray], h: int, wd: int, t: int) -> np.ndarray:
    n = h * wd
    member = sp.csr_matrix((np.ones(n), (np.concatenate(tiles), np.repeat(np.arange(len(tiles)), t * t))),
                           shape=(n, len(tiles)))
    touched = _unique_rows(w @ member)
    tpos = layout(adjacency(touched.T @ touched, 1), h // t, wd // t)
    est = np.empty(n, dtype=np.int64)
    inner = np.arange(t * t)
    for g, p in zip(tiles, tpos):
        ty, tx = divmod(int(p), wd // t)
        est[g] = (ty * t + inner // t) * wd + tx * t + inner % t
    return est


def recover_arrangement(w: sp.csr_matrix, h: int, wd: int) -> tuple[np.ndarray, dict, list[np.ndarray]]:
    """Estimated plain position of every keyed pixel (up to grid symmetry), how it was found, and the
    groups of pixels the attack cannot tell apart.

    Pixel level when every column has its own support. Otherwise the attack hypothesises square t x t tiles
    (smallest t dividing the frame that holds the largest group), merges groups into tiles and lays
    the tiles out; positions inside a tile are a guess (row-major order of the columns).
    """
    n = h * wd
    if w.shape[1] != n:
        raise AttackError(f"first sparse layer has {w.shape[1]} inputs, the frame has {n} pixels")
    groups = column_groups(w)
    info = {"groups": len(groups), "group_size": max(len(g) for g in groups)}
    if info["group_size"] == 1:
        windows = _unique_rows(w)
        try:
            if windows.getnnz(axis=1).max() != KERNEL_WINDOW:
                raise LayoutFailed("first layer is not a 3x3 convolution")
            est = np.empty(n, dtype=np.int64)
            est[np.concatenate(groups)] = layout(adjacency(windows.T @ windows, MIN_SHARED_WINDOWS), h, wd)
            return est, {**info, "layout": "pixels"}, groups
        except LayoutFailed as exc:
            reason = str(exc)
    else:
        reason = "no tile size fits the column groups"
        for t in range(int(np.ceil(np.sqrt(info["group_size"]))), min(h, wd) // 3 + 1):
            if h % t or wd % t:
                continue
            tiles = merge_into_tiles(w, groups, n // (t * t))
            if tiles is None:
                continue
            try:
                return _layout_tiles(w, tiles, h, wd, t), {**info, "layout": f"tiles of {t}x{t}"}, tiles
            except LayoutFailed as exc:
                reason = f"tiles of {t}x{t}: {exc}"
    est = np.random.default_rng(0).permutation(n)          # an uninformed guess
    return est, {**info, "layout": f"failed ({reason})"}, [np.arange(n)]


def true_positions(target: Target) -> np.ndarray:
    """Ground truth: the plain pixel that dominates each keyed pixel (largest weight in its row of A0)."""
    lin = target.keyset.sensor.linear_csr().tocsr()
    return np.asarray(abs(lin).argmax(axis=1)).ravel()


def normalise(keyed: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Per-keyed-pixel gain/offset removal from keyed frames alone: (k - min) / (max - min), the
    min and max taken over `reference` frames (default: the frames themselves)."""
    k = np.asarray(keyed, dtype=np.float64).reshape(len(keyed), -1)
    ref = k if reference is None else np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    lo, hi = ref.min(axis=0), ref.max(axis=0)
    span = np.where(hi - lo >= 2, hi - lo, np.inf)
    return (k - lo) / span


def reconstruct(values: np.ndarray, est: np.ndarray, groups: list[np.ndarray] | None = None) -> np.ndarray:
    """Place normalised keyed pixels at their estimated positions; groups are filled with their mean."""
    out = np.zeros_like(values)
    out[:, est] = values
    if groups is not None:
        for g in groups:
            out[:, est[g]] = values[:, g].mean(axis=1, keepdims=True)
    return out


def run_structure(target: Target, frames: int | None = None) -> tuple[dict, dict]:
    """Run the attack; returns (JSON result, arrays for figures)."""
    h, wd = target.shape
    w = first_sparse_layer(target.tflite_int8)
    est, info, groups = recover_arrangement(w, h, wd)
    truth = true_positions(target)
    best = max(symmetries(h, wd), key=lambda m: np.mean(m[est] == truth))
    est = best[est]
    plain = target.plain[:frames]
    values = normalise(target.keyed(plain))
    guess = reconstruct(values, est)
    scores = similarity(guess, plain, (h, wd))
    recon = guess
    if len(groups) < h * wd:
        filled = reconstruct(values, est, groups)
        filled_scores = similarity(filled, plain, (h, wd))
        if filled_scores["ssim"] > scores["ssim"]:
            scores, recon = filled_scores, filled
    result = {"pixels_recovered": float(np.mean(est == truth)), **scores, "recognised": target.recognised(recon), **info}
    figs = {"plain": plain, "keyed": target.keyed(plain), "recon": recon, "shape": (h, wd)}
    if info["group_size"] > 1:
        result["adaptive"], figs["recon_adaptive"] = run_adaptive(target, w, plain, truth)
    return result, figs


def run_adaptive(target: Target, w: sp.csr_matrix, plain: np.ndarray, truth: np.ndarray) -> tuple[dict, np.ndarray]:
    """The unmixing step on every group of indistinguishable keyed pixels, handed their true positions;
    fitted on the attacker's own keyed frames (the training split's frames keyed by the victim). The
    better (by SSIM) of the plain group-mean fill and the unmixed estimate is reported."""
    h, wd = target.shape
    captured = target.keyed(target.train_plain)
    fit, test = normalise(captured), normalise(target.keyed(plain), reference=captured)
    groups = column_groups(w)
    positions = [truth[g] for g in groups]
    tried = {}
    for method, iterations in (("group mean", 0), ("unmixed", ITERATIONS)):
        recon, assigned = unmix(fit, test, groups, positions, (h, wd), iterations)
        tried[method] = ({"method": method, "pixels_recovered": float(np.mean(assigned == truth)),
                          **similarity(recon, plain, (h, wd)), "recognised": target.recognised(recon)}, recon)
    best, recon = max(tried.values(), key=lambda r: r[0]["ssim"])
    return {"assumes": "true plain positions of each mixing group (upper bound)", **best,
            "frames_captured": len(captured)}, recon
