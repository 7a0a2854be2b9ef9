"""Attack `model-file`: recover the sensor key A0 from the keyed int8 .tflite alone (no frames).

Key-Nets profiles keep the keyed conv and pool layers as float32 CSR with exact values, W1' = A1 W1 A0^-1:
- hidden positions: conv1 rows with one support; pool1 rows give the 2x2 blocks and, per row, the
  (channel, block) it belongs to; conv2's windows give the block grid (tools.attacks.grid.layout); the
  order inside each block is the best of 24 assignments by window overlaps (`hidden_layout`);
- mixing groups: conv1 columns with one support; a group's plain cells: the exact cover of its footprint
  by 3x3 windows that also matches the rank of conv1's block at each position (`group_cells`);
- a cell's row of A0^-1 (up to scale): the common row space of conv1's blocks at the positions that see it,
  each block holding one row per channel (`cell_directions`);
- inverting those rows and balancing to doubly stochastic gives the mixing and relative gains per group;
  a sparse log-linear least-squares fit of conv1's values (row gain x kernel tap x group scale) gives the
  group scales; conv1's biases give the offsets; the generator's public normalisation (max row sum +
  offset = 1, keys/generate.py) gives the last global scale; the orientation comes from public labelled
  frames run through the keyed model itself.
A profile whose first stage is the inverse sensor key as an int8 sparse map is read and inverted directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import permutations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from edge.runtime import TFLiteModel
from hardware.preadc import adc
from tools.attacks.grid import LayoutFailed, adjacency, cover_cells, layout, symmetries, windows
from tools.attacks.metrics import similarity
from tools.attacks.structure import MIN_SHARED_WINDOWS, column_groups
from tools.attacks.target import AttackError, Target
from tools.attacks.tflite_read import SparseLayer, first_int8_map, sparse_layers
from tools.bench.common import predict_labels
from tools.tflite.sparse_int8 import support_ids

RADIUS = 1                  # the public architecture's stem is a 3x3 'same' convolution
RANK_TOL = 1e-5             # singular values below this fraction of the largest are float32 rounding
SINKHORN_STEPS = 2000
ORIENTATION_FRAMES = 100    # public labelled frames that choose among the grid's symmetries
SNAP_SPREAD = 0.06          # how far int8 rounding moves a multiplexing row's entries (measured <= 0.03 of the value)


@dataclass(frozen=True)
class HiddenLayout:
    """Where conv1's rows sit: plain grid position and the (channel, 2x2 block) pool group of each row; which
    rows share one output gain (`gain_class`), and the keyed pool1 weights that tie gains inside a block."""
    position: np.ndarray
    pool_group: np.ndarray
    channels: int
    gain_class: np.ndarray
    pool: sp.csr_matrix | None


@dataclass
class RecoveredKey:
    """A0 estimated as y = linear x + offset (keyed pixel x plain position); plain positions in the
    recovered frame until `orient` picks the grid symmetry."""
    linear: sp.csr_matrix
    offset: np.ndarray
    groups: list[np.ndarray]          # keyed columns of each mixing group
    cells: list[np.ndarray]           # their plain positions
    resolved: int                     # cells whose row of A0^-1 was pinned down exactly
    guessed: np.ndarray               # keyed pixels whose row is a guess (their group's mean)

    def relabel(self, mapping: np.ndarray) -> RecoveredKey:
        """The same key with plain position p moved to mapping[p]."""
        lin = self.linear.tocoo()
        moved = sp.csr_matrix((lin.data, (lin.row, mapping[lin.col])), shape=lin.shape)
        return RecoveredKey(moved, self.offset, self.groups, [mapping[c] for c in self.cells], self.resolved,
                            self.guessed)

    def apply(self, plain: np.ndarray) -> np.ndarray:
        """Key plain frames (N, n) in [0, 1]."""
        return np.asarray(plain) @ self.linear.T.toarray() + self.offset

    def decrypt(self, keyed_u8: np.ndarray) -> np.ndarray:
        """Plain frames in [0, 1] from keyed uint8 frames, group by group."""
        y = np.asarray(keyed_u8, dtype=np.float64).reshape(len(keyed_u8), -1) / 255.0 - self.offset
        out = np.zeros((len(y), self.linear.shape[1]))
        dense = self.linear.toarray()
        for g, c in zip(self.groups, self.cells):
            out[:, c] = y[:, g] @ np.linalg.pinv(dense[np.ix_(g, c)]).T
        return np.clip(out, 0.0, 1.0)


def _rows_by(labels: np.ndarray, count: int) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.cumsum(np.bincount(labels, minlength=count))[:-1])


def _support_sets(w: sp.csr_matrix) -> list[np.ndarray]:
    w = sp.csr_matrix(w)
    w.sort_indices()
    return [w.indices[w.indptr[i]:w.indptr[i + 1]] for i in range(w.shape[0])]


def hidden_layout(layers: list[SparseLayer], h: int, w: int) -> HiddenLayout:
    """Plain position and pool group of every conv1 row, from the keyed layers' support patterns."""
    conv1 = layers[0]
    rows = conv1.weight.shape[0]
    if rows % (h * w):
        raise AttackError(f"the first sparse layer has {rows} rows, not a multiple of the {h}x{w} frame")
    c = rows // (h * w)
    if conv1.nhwc is not None:                    # stem profiles: rows already in plain HWC order
        if tuple(conv1.nhwc) != (h, w, c):
            raise AttackError(f"the first layer's output map {conv1.nhwc} is not the {h}x{w} frame")
        pos = np.arange(rows) // c
        y, x = np.divmod(pos, w)
        chan = np.arange(rows) % c                # a per-channel output key: one gain per channel
        return HiddenLayout(pos, ((y // 2) * (w // 2) + x // 2) * c + chan, c, chan, None)
    if len(layers) < 3 or h % 2 or w % 2:
        raise AttackError("the keyed model has no sparse conv1 -> pool1 -> conv2 chain to lay out")
    pool = sp.csr_matrix(layers[1].weight)
    pool_sets = _support_sets(pool)
    if pool.shape[1] != rows or any(len(s) != 4 for s in pool_sets):
        raise AttackError("pool1 is not a 2x2 average pool over conv1's rows")
    group = np.full(rows, -1)
    for i, s in enumerate(pool_sets):
        group[s] = i
    if np.any(group < 0):
        raise AttackError("pool1 does not read every conv1 row")
    block_of_pool = np.full(len(pool_sets), -1)       # a block's pool units (its channels) share conv2's support
    for b, units in enumerate(column_groups(sp.csr_matrix(layers[2].weight))):
        block_of_pool[units] = b
    pair = block_of_pool[group] * rows + support_ids(conv1.weight)
    cls = np.unique(pair, return_inverse=True)[1].reshape(-1)      # position = (block, conv1 support)
    if block_of_pool.max() + 1 != h * w // 4 or cls.max() + 1 != h * w or np.any(np.bincount(cls) != c):
        raise AttackError(f"conv1's rows do not fall into {h * w} positions of {c} channels in 2x2 blocks "
                          "(positions of one block share a support: the mixing hides them)")
    members = _rows_by(block_of_pool[group][np.unique(cls, return_index=True)[1]], h * w // 4)
    if any(len(m) != 4 for m in members):
        raise AttackError("pool1's blocks do not hold 4 conv1 positions each")
    bh, bw = h // 2, w // 2
    units = len(pool_sets)
    unit_block = sp.csr_matrix((np.ones(units), (np.arange(units), block_of_pool)), shape=(units, len(members)))
    touch = (sp.csr_matrix(layers[2].weight) != 0).astype(np.int32) @ unit_block
    touch = sp.csr_matrix((touch != 0).astype(np.int32))
    _, first = np.unique(support_ids(touch), return_index=True)
    windows_b = touch[np.sort(first)]
    try:
        block_pos = layout(adjacency(windows_b.T @ windows_b, MIN_SHARED_WINDOWS), bh, bw)
    except LayoutFailed as exc:
        raise AttackError(f"conv2's windows do not lay out a {bh}x{bw} block grid: {exc}") from exc
    cell = _order_blocks(conv1.weight, cls, members, block_pos, h, w)
    return HiddenLayout(cell[cls], group, c, np.arange(rows), pool)


def _order_blocks(conv1: sp.csr_matrix, cls: np.ndarray, members: list[np.ndarray], block_pos: np.ndarray,
                  h: int, w: int) -> np.ndarray:
    """Grid cell of every conv1 position class: inside each 2x2 block, the one of 24 orders whose window
    overlaps with the neighbouring blocks best match those of the plain grid."""
    n = h * w
    incid = sp.csr_matrix((np.ones(len(cls)), (cls, np.arange(len(cls)))), shape=(n, len(cls))) @ (conv1 != 0)
    incid = (incid != 0).astype(np.float64)
    overlap = (incid @ incid.T).toarray()
    win = windows(h, w, RADIUS)
    member = sp.csr_matrix((np.ones(sum(len(v) for v in win)), (np.repeat(np.arange(n), [len(v) for v in win]),
                                                                np.concatenate(win))), shape=(n, n))
    grid_overlap = (member @ member.T).toarray()
    bw = w // 2
    cells_of = lambda b: [(2 * (b // bw) + dy) * w + 2 * (b % bw) + dx for dy in (0, 1) for dx in (0, 1)]  # noqa: E731
    at = {int(p): k for k, p in enumerate(block_pos)}
    out = np.empty(n, dtype=np.int64)
    for k, p in enumerate(block_pos):
        by, bx = divmod(int(p), bw)
        near = [at[(by + dy) * bw + bx + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if (dy or dx) and 0 <= by + dy < h // 2 and 0 <= bx + dx < bw]
        obs = np.array([[overlap[m, members[j]].sum() for j in near] for m in members[k]])
        want = np.array([[grid_overlap[c, cells_of(int(block_pos[j]))].sum() for j in near] for c in cells_of(int(p))])
        best = max(permutations(range(4)), key=lambda o: sum(obs[o[i]] @ want[i] for i in range(4)))
        for i, c in enumerate(cells_of(int(p))):
            out[members[k][best[i]]] = c
    return out


def _row_space(block: np.ndarray, scale: float) -> np.ndarray:
    _, s, vt = np.linalg.svd(block, full_matrices=False)
    return vt[s > RANK_TOL * scale]


def group_cells(dense: np.ndarray, hl: HiddenLayout, cols: np.ndarray, rows_at: list[np.ndarray],
                wins: list[np.ndarray], scale: float) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
    """The plain cells of one mixing group (None when ambiguous) and conv1's row space per position."""
    foot = np.flatnonzero(np.any(dense[:, cols] != 0, axis=1))
    positions = np.unique(hl.position[foot])
    spaces = {int(q): _row_space(dense[np.ix_(rows_at[q], cols)], scale) for q in positions}
    counts = {q: len(v) for q, v in spaces.items()}
    found = cover_cells(positions, len(cols), wins, counts, cap=hl.channels)
    return (found[0] if len(found) == 1 else None), spaces


def cell_directions(cells: np.ndarray, spaces: dict[int, np.ndarray], wins: list[np.ndarray],
                    channels: int) -> tuple[np.ndarray, int]:
    """Each cell's row of A0^-1 on its group's columns (up to scale): the vector common to the row spaces of
    every fully ranked position that sees it. Returns the rows and how many were pinned down exactly."""
    t = len(cells)
    cellset = set(cells.tolist())
    rows, exact = np.empty((t, t)), 0
    for i, c in enumerate(cells):
        proj = np.zeros((t, t))
        for q in wins[c]:
            seen = sum(int(d) in cellset for d in wins[q])
            if seen <= channels and int(q) in spaces:
                u = spaces[int(q)]
                proj += np.eye(t) - u.T @ u
        vals, vecs = np.linalg.eigh(proj)
        rows[i] = vecs[:, 0]
        exact += int(vals[0] < 1e-6 and (t == 1 or vals[1] > 1e-3))
    return rows, exact


def balance(inverse_rows: np.ndarray) -> np.ndarray:
    """A0's block (keyed columns x cells) up to one scale: the inverse of the cells' rows, its columns scaled
    so that rows and columns sum alike (Sinkhorn: the mixing is doubly stochastic, the gains act on rows)."""
    k = np.linalg.inv(inverse_rows)
    k = k * np.sign(k.sum(axis=0))[None, :]
    k = np.clip(k, 1e-12, None)
    col = np.ones(k.shape[1])
    for _ in range(SINKHORN_STEPS):
        m = k * col
        m = m / m.sum(axis=1, keepdims=True)
        step = 1.0 / m.sum(axis=0)
        col = col * step
        if np.max(np.abs(step - 1)) < 1e-13:
            break
    return k * col


def _coefficients(dense, hl, rows_at, wins, groups, cells, blocks):
    """conv1 row r's weight on cell c (through c's row of A0^-1 in its group), for every row and group cell."""
    eq_r, eq_c, eq_v = [], [], []
    cell_index = {}
    for g, (cols, cl) in enumerate(zip(groups, cells)):
        inv = np.linalg.inv(blocks[g])           # cells x columns
        for i, c in enumerate(cl):
            cell_index[int(c)] = (g, i)
        for q in np.unique(np.concatenate([wins[c] for c in cl])):
            inside = [i for i, c in enumerate(cl) if int(c) in set(wins[q].tolist())]
            r = rows_at[q]
            coef, *_ = np.linalg.lstsq(inv[inside].T, dense[np.ix_(r, cols)].T, rcond=None)
            for k, i in enumerate(inside):
                eq_r.append(r)
                eq_c.append(np.full(len(r), cl[i]))
                eq_v.append(coef[k])
    return np.concatenate(eq_r), np.concatenate(eq_c), np.concatenate(eq_v), cell_index


def _solve_projected(a: sp.csr_matrix, b: np.ndarray, label: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Least squares for x in a x + weight * beta[label] = b, with one free beta per label eliminated
    (each label's equations projected orthogonally to `weight`); dense normal equations, a tiny ridge keeps
    the directions the equations leave free (a global scale) at zero."""
    m = len(b)
    ind = sp.csr_matrix((weight, (label, np.arange(m))))
    norm = np.asarray(ind.multiply(ind).sum(axis=1)).ravel()
    scale = sp.diags(1.0 / np.where(norm > 0, norm, 1.0))
    back = ind.T.tocsr()
    pa = sp.csr_matrix(a) - back @ (scale @ (ind @ a))
    pb = b - back @ (scale @ (ind @ b))
    normal = (pa.T @ pa).toarray()
    ridge = 1e-12 * max(float(np.trace(normal)) / len(normal), 1e-300)     # pins a gauge freedom at 0
    return np.linalg.solve(normal + ridge * np.eye(len(normal)), pa.T @ pb)


def row_gains(hl: HiddenLayout) -> np.ndarray:
    """log gain of every conv1 row, exact up to one constant per pool group: the keyed pool1 averages its
    block's rows with weights pool gain / (4 row gain); without a keyed pool1 (stem) a block's rows share
    their channel's gain."""
    if hl.pool is None:
        return np.zeros(len(hl.position))
    pool = hl.pool.tocoo()
    out = np.zeros(len(hl.position))
    out[pool.col] = -np.log(np.abs(pool.data))
    return out


def fit_scales(hl: HiddenLayout, eq_r, eq_c, eq_v, group_of_cell, n_groups, w) -> np.ndarray:
    """Group scales (up to one global factor) from log|coef| = log row gain + log|kernel tap| - log group
    scale: row gains are known inside each pool group (`row_gains`), so one unknown per (pool group, tap)
    remains beside the group scales; it is eliminated and the scales solved by least squares. (Without the
    pool1 ties a log-linear tilt across the frame would fit as well.)"""
    keep = np.abs(eq_v) > 1e-7 * np.abs(eq_v).max()
    r, c = eq_r[keep], eq_c[keep]
    lhs = np.log(np.abs(eq_v[keep])) - row_gains(hl)[r]
    (cy, cx), (qy, qx) = np.divmod(c, w), np.divmod(hl.position[r], w)
    side = 2 * RADIUS + 1
    tap = hl.pool_group[r] * side * side + (cy - qy + RADIUS) * side + cx - qx + RADIUS
    a = sp.csr_matrix((-np.ones(len(c)), (np.arange(len(c)), group_of_cell[c])), shape=(len(c), n_groups))
    return np.exp(_solve_projected(a, lhs, tap, np.ones(len(c))))


def fit_offsets(conv1: sp.csr_matrix, bias: np.ndarray, hl: HiddenLayout) -> np.ndarray:
    """A0's offset c0 from conv1's biases: b'[r] = gain[r] beta[pool group] - (W1' c0)[r], since
    W1' = A1 W1 A0^-1 (beta, the channel bias per pool group, eliminated; the frame border pins the rest)."""
    return _solve_projected(-sp.csr_matrix(conv1, dtype=np.float64), np.asarray(bias, dtype=np.float64),
                            hl.pool_group, np.exp(row_gains(hl)))


def recover_key(layers: list[SparseLayer], h: int, w: int, progress=None) -> RecoveredKey:
    """A0 from the keyed conv1/pool1/conv2 layers (plain positions up to the grid's symmetries)."""
    say = progress or (lambda msg: None)
    n = h * w
    hl = hidden_layout(layers, h, w)
    say("model-file: hidden positions laid out")
    dense = layers[0].weight.toarray().astype(np.float64)
    if dense.shape[1] != n:
        raise AttackError(f"conv1 reads {dense.shape[1]} inputs, the frame has {n} pixels")
    scale = float(np.abs(dense).max())
    rows_at = _rows_by(hl.position, n)
    wins = windows(h, w, RADIUS)
    groups = column_groups(layers[0].weight)
    cells, blocks, exact, kept, hidden = [], [], 0, [], []
    for cols in groups:
        cl, spaces = group_cells(dense, hl, cols, rows_at, wins, scale)
        if cl is None:
            continue
        inv_rows, ok = cell_directions(cl, spaces, wins, hl.channels)
        if ok < len(cl):                 # a cell never seen apart from its group-mates: no exact row of A0^-1
            hidden.append((cols, cl))
            continue
        kept.append(cols)
        cells.append(cl)
        blocks.append(balance(inv_rows))
        exact += ok
    say(f"model-file: {len(kept)} of {len(groups)} groups placed with every cell's inverse row exact, "
        f"{len(hidden)} placed without")
    if not kept:
        raise AttackError("no mixing group could be placed on the grid with exact inverse rows")
    eq_r, eq_c, eq_v, cell_index = _coefficients(dense, hl, rows_at, wins, kept, cells, blocks)
    group_of_cell = np.full(n, -1)
    for c, (g, _) in cell_index.items():
        group_of_cell[c] = g
    group_scale = fit_scales(hl, eq_r, eq_c, eq_v, group_of_cell, len(kept), w)
    offset = fit_offsets(layers[0].weight, layers[0].bias, hl)
    lin = _assemble([b * s for b, s in zip(blocks, group_scale)], kept, cells, n)
    rows = np.concatenate(kept)
    row_sum = np.asarray(lin.sum(axis=1)).ravel()
    factor = np.min((1.0 - offset[rows]) / row_sum[rows])     # keys/generate.py: max(gain + bias) = 1
    lin = lin * factor
    typical = float(np.median(row_sum[rows])) * factor
    fill = [np.full((len(g), len(c)), typical / len(c)) for g, c in hidden]   # the group's mean: a guess
    lin = lin + _assemble(fill, [g for g, _ in hidden], [c for _, c in hidden], n)
    guessed = np.concatenate([g for g, _ in hidden]) if hidden else np.zeros(0, dtype=np.int64)
    return RecoveredKey(sp.csr_matrix(lin), offset, kept + [g for g, _ in hidden], cells + [c for _, c in hidden],
                        exact, guessed)


def _assemble(blocks: list[np.ndarray], groups: list[np.ndarray], cells: list[np.ndarray], n: int) -> sp.csr_matrix:
    """The n x n matrix with blocks[g] at rows groups[g], columns cells[g]."""
    if not blocks:
        return sp.csr_matrix((n, n))
    rr = np.concatenate([np.repeat(g, len(c)) for g, c in zip(groups, cells)])
    cc = np.concatenate([np.tile(c, len(g)) for g, c in zip(groups, cells)])
    return sp.csr_matrix((np.concatenate([b.reshape(-1) for b in blocks]), (rr, cc)), shape=(n, n))


def orient(key: RecoveredKey, target: Target, h: int, w: int) -> tuple[RecoveredKey, float]:
    """The grid symmetry under which public labelled frames keyed with the recovered key are best classified
    by the keyed model itself; returns the oriented key and that accuracy."""
    model = TFLiteModel(target.tflite_int8)
    x = target.train_plain[:ORIENTATION_FRAMES]
    y = target.train_labels[:ORIENTATION_FRAMES]
    scored = []
    for m in symmetries(h, w):
        cand = key.relabel(m)
        acc = float(np.mean(predict_labels(model, adc(cand.apply(x)), "orientation", False) == y))
        scored.append((acc, cand))
    acc, best = max(scored, key=lambda s: s[0])
    return best, acc


def snap_block(block: np.ndarray) -> np.ndarray:
    """Round one group's block of A0 to a multiplexing key's public structure (keys/generate.py: every row one
    value on a 0/1 pattern) when each of its rows fits it within int8 rounding: entries above half the row's
    largest become their mean, the rest 0. Other blocks (dominant-permutation mixing) are left as they are."""
    big = np.abs(block) > 0.5 * np.abs(block).max(axis=1, keepdims=True)
    mean = np.where(big, block, 0.0).sum(axis=1, keepdims=True) / big.sum(axis=1, keepdims=True)
    spread = np.abs(np.where(big, block - mean, block)) / np.abs(mean)
    return np.where(big, mean, 0.0) if np.all(mean > 0) and spread.max() < SNAP_SPREAD else block


def map_groups(w: sp.csr_matrix) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Connected components of a square sparse map's rows and columns (int8 rounding may zero a few entries,
    so supports alone do not group them): the columns and the rows of each mixing group."""
    n = w.shape[0]
    pattern = (abs(w) > 0).astype(np.int8)
    count, label = connected_components(sp.bmat([[None, pattern], [pattern.T, None]]), directed=False)
    rows, cols = _rows_by(label[:n], count), _rows_by(label[n:], count)
    return [c for c in cols if len(c)], [r for r, c in zip(rows, cols) if len(c)]


def key_from_int8_map(blob: bytes, n: int) -> RecoveredKey | None:
    """A0 from a model whose first stage is A0^-1 as an int8 sparse map on the input (None otherwise):
    dequantised, inverted group by group and rounded to the key family's structure (`snap_block`)."""
    stage = first_int8_map(blob)
    if stage is None or stage.weight.shape != (n, n):
        return None
    groups, cells = map_groups(stage.weight)
    lin = np.zeros((n, n))
    for g, c in zip(groups, cells):
        block = stage.weight[c][:, g].toarray()
        if block.shape[0] != block.shape[1] or abs(np.linalg.det(block)) < 1e-300:
            raise AttackError("the int8 input map is not block-invertible: it is not an inverse sensor key")
        lin[np.ix_(g, c)] = snap_block(np.linalg.inv(block))
    return RecoveredKey(sp.csr_matrix(lin), -lin @ stage.bias, groups, cells, n, np.zeros(0, dtype=np.int64))


def score(key: RecoveredKey, target: Target) -> tuple[dict, np.ndarray]:
    """Pixels placed exactly (their dominant plain pixel right, not a guess), A0's relative linear error and
    largest offset error (fraction of full scale) on them, and frames decrypted with the recovered key."""
    h, w = target.shape
    true_lin = target.keyset.sensor.linear_csr().toarray()
    true_off = target.keyset.sensor.offset()
    rec = key.linear.toarray()
    placed = (np.abs(rec).argmax(axis=1) == np.abs(true_lin).argmax(axis=1)) & (np.abs(rec).max(axis=1) > 0)
    placed[key.guessed] = False
    ok = np.flatnonzero(placed)
    lin_err = float(np.linalg.norm(rec[ok] - true_lin[ok]) / max(np.linalg.norm(true_lin[ok]), 1e-12)) \
        if len(ok) else 1.0
    off_err = float(np.max(np.abs(key.offset[ok] - true_off[ok]))) if len(ok) else 1.0
    keyed = target.keyed(target.plain)
    recon = key.decrypt(keyed)
    truth = np.clip(target.keyset.sensor.apply_inverse(keyed / 255.0), 0.0, 1.0)
    return {"pixels_placed": float(placed.mean()), "a0_linear_error": lin_err, "a0_bias_error": off_err,
            **similarity(recon, target.plain, (h, w)), "recognised": target.recognised(recon),
            "recognised_true_key": target.recognised(truth)}, recon


def run_model_file(target: Target, progress=None) -> tuple[dict, dict]:
    """Recover A0 from target.tflite_int8 alone (target.keyset only scores); returns (JSON result, figures).
    Raises AttackError with the reason when the model gives no handle on A0."""
    h, w = target.shape
    start = time.perf_counter()
    key = key_from_int8_map(target.tflite_int8, h * w)
    if key is not None:
        method, orientation_acc = "int8 input map inverted", None
    else:
        layers = sparse_layers(target.tflite_int8)
        if not layers:
            raise AttackError("the model has neither float CSR keyed layers nor an int8 input map to read")
        key, orientation_acc = orient(recover_key(layers, h, w, progress), target, h, w)
        method = "keyed conv1/pool1/conv2 values"
    seconds = time.perf_counter() - start
    result, recon = score(key, target)
    result.update({"method": method, "groups": len(key.groups), "group_size": int(max(len(g) for g in key.groups)),
                   "cells_exact": key.resolved, "pixels_guessed": len(key.guessed),
                   "orientation_accuracy": orientation_acc,
                   "seconds_attack": round(seconds, 2)})
    return result, {"plain": target.plain, "keyed": target.keyed(target.plain), "recon": recon, "shape": (h, w)}
