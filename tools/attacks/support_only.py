"""Attack `support-only`: the model-file attack without weight values, then the unmixing step on frames.

From the keyed .tflite's sparsity pattern alone. An int8 inverse-key input stage (A0^-1, a row per plain pixel)
shows each mixing group's plain pixels directly. Otherwise conv1/pool1/conv2 supports lay out the hidden positions
(tools.attacks.model_file.hidden_layout); each mixing group's plain cells are an exact cover of its footprint
(the positions whose conv1 rows read it) by 3x3 windows. Inside a group the support cannot tell the
members apart: tools.attacks.unmix undoes the mixing with a spatial prior, fitted on captured keyed frames.
The grid's orientation is the symmetry whose mean reconstruction best matches the mean public image.
"""
from __future__ import annotations

import time

import numpy as np

from tools.attacks.grid import cover_cells, symmetries, windows
from tools.attacks.metrics import similarity
from tools.attacks.model_file import RADIUS, hidden_layout, map_groups
from tools.attacks.structure import column_groups, normalise, true_positions
from tools.attacks.target import AttackError, Target
from tools.attacks.tflite_read import first_int8_map, sparse_layers
from tools.attacks.unmix import ITERATIONS, unmix

MIN_FRAMES = 2


def place_groups(target: Target) -> tuple[list[np.ndarray], list[np.ndarray], int, int]:
    """Keyed columns and plain cells of every mixing group from support alone: read off an int8 inverse-key
    input stage, else laid out from the keyed conv layers; groups whose footprint has no exact cover get the
    cells nobody claimed (a guess). Returns groups, cells, groups covered, ambiguous ones."""
    h, w = target.shape
    stage = first_int8_map(target.tflite_int8)
    if stage is not None and stage.weight.shape == (h * w, h * w):     # A0^-1's rows are the plain pixels
        groups, cells = map_groups(stage.weight)
        return groups, cells, len(groups), 0
    layers = sparse_layers(target.tflite_int8)
    if not layers:
        raise AttackError("the model has neither float CSR keyed layers nor an int8 input map: no support to read")
    hl = hidden_layout(layers, h, w)
    wins = windows(h, w, RADIUS)
    conv1 = layers[0].weight.tocsc()
    groups = column_groups(layers[0].weight)
    cells: list[np.ndarray | None] = []
    ambiguous = 0
    for cols in groups:
        rows = conv1.indices[conv1.indptr[cols[0]]:conv1.indptr[cols[0] + 1]]
        found = cover_cells(np.unique(hl.position[rows]), len(cols), wins)
        ambiguous += len(found) > 1
        cells.append(found[0] if found else None)
    claimed = np.zeros(h * w, dtype=int)
    for cl in cells:
        if cl is not None:
            claimed[cl] += 1
    free = list(np.flatnonzero(claimed == 0))
    covered = sum(cl is not None for cl in cells)
    for i, cols in enumerate(groups):
        if cells[i] is None:
            cells[i] = np.array([free.pop() if free else int(np.argmin(claimed)) for _ in cols])
    return groups, cells, covered, ambiguous


def orient_to_public(recon: np.ndarray, public: np.ndarray, h: int, w: int) -> np.ndarray:
    """The grid symmetry (an index map) under which the mean reconstruction correlates best with the
    mean public image."""
    mean_rec, mean_pub = recon.mean(axis=0), public.mean(axis=0)
    return max(symmetries(h, w), key=lambda m: np.corrcoef(mean_rec[np.argsort(m)], mean_pub)[0, 1])


def run_support_only(target: Target, frames: np.ndarray) -> tuple[dict, dict]:
    """Place pixels from the keyed model's support, then unmix on `frames` captured keyed uint8 frames
    (N, H*W), as Target.keyed gives. Returns (JSON result, figures)."""
    h, w = target.shape
    captured = np.asarray(frames).reshape(len(frames), -1)
    if len(captured) < MIN_FRAMES or captured.shape[1] != h * w:
        raise AttackError(f"support-only needs at least {MIN_FRAMES} captured keyed frames of {h * w} pixels, "
                          f"got {captured.shape}")
    start = time.perf_counter()
    groups, cells, covered, ambiguous = place_groups(target)
    keyed = target.keyed(target.plain)
    fit, test = normalise(captured), normalise(keyed, reference=captured)
    iterations = ITERATIONS if max(len(g) for g in groups) > 1 else 0
    recon, assigned = unmix(fit, test, groups, cells, (h, w), iterations)
    m = orient_to_public(recon, target.train_plain, h, w)      # unmixing is symmetric: orient afterwards
    recon, assigned = recon[:, np.argsort(m)], m[assigned]
    seconds = time.perf_counter() - start
    truth = true_positions(target)
    in_cells = np.concatenate([np.isin(truth[g], m[c]) for g, c in zip(groups, cells)])
    result = {"pixels_placed": float(np.mean(assigned == truth)), "group_cells_placed": float(np.mean(in_cells)),
              **similarity(recon, target.plain, (h, w)), "recognised": target.recognised(recon),
              "groups": len(groups), "group_size": int(max(len(g) for g in groups)), "groups_covered": covered,
              "groups_ambiguous": ambiguous, "frames_captured": len(captured), "seconds_attack": round(seconds, 2)}
    return result, {"plain": target.plain, "keyed": keyed, "recon": recon, "shape": (h, w)}
