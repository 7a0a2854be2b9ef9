"""Lay out a king's graph (8-neighbour grid adjacency) on an H x W grid, the grid's symmetries, and which cells
3x3 windows read (with an exact-cover search of a footprint by windows)."""
from __future__ import annotations

from collections import deque
from itertools import combinations

import numpy as np
import scipy.sparse as sp


class LayoutFailed(Exception):
    """The adjacency is not that of an H x W king's graph (the structure is hidden)."""


def king_neighbours(h: int, w: int) -> list[set[int]]:
    """The 8-neighbour adjacency of an h x w grid, positions indexed y * w + x."""
    out = []
    for y in range(h):
        for x in range(w):
            out.append({(y + dy) * w + x + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                        if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w})
    return out


def _bfs(start: int, adj: list[set[int]], allowed: set[int]) -> tuple[dict[int, int], dict[int, int]]:
    dist, parent, queue = {start: 0}, {start: -1}, deque([start])
    while queue:
        v = queue.popleft()
        for u in adj[v]:
            if u in allowed and u not in dist:
                dist[u], parent[u] = dist[v] + 1, v
                queue.append(u)
    return dist, parent


def _path(parent: dict[int, int], end: int) -> list[int]:
    out = [end]
    while parent[out[-1]] != -1:
        out.append(parent[out[-1]])
    return out[::-1]


def adjacency(co: sp.csr_matrix, threshold: int) -> list[set[int]]:
    """Neighbour sets from a co-occurrence matrix: i and j are neighbours when co[i, j] >= threshold."""
    co = co.tocsr()
    return [{int(j) for j, c in zip(co.indices[co.indptr[i]:co.indptr[i + 1]], co.data[co.indptr[i]:co.indptr[i + 1]])
             if j != i and c >= threshold} for i in range(co.shape[0])]


def layout(adj: list[set[int]], h: int, w: int) -> np.ndarray:
    """Position (y * w + x) of every node of a king's graph, up to the grid's symmetries.

    Corners have 3 neighbours and edge nodes 5; the top row and left column are shortest paths between
    corners along the border; every further node is the one free neighbour of the node above it that
    touches its left neighbour. The result is verified against the exact king's graph.
    """
    n = len(adj)
    if n != h * w or h < 3 or w < 3:
        raise LayoutFailed(f"{n} nodes do not form a {h} x {w} grid of at least 3 x 3")
    deg = np.array([len(a) for a in adj])
    corners = [int(v) for v in np.flatnonzero(deg == 3)]
    border = set(int(v) for v in np.flatnonzero((deg == 3) | (deg == 5)))
    if len(corners) != 4 or len(border) != 2 * (h + w) - 4:
        raise LayoutFailed("degree pattern is not a grid's")
    dist, parent = _bfs(corners[0], adj, border)
    along_w = [c for c in corners[1:] if dist.get(c) == w - 1]
    along_h = [c for c in corners[1:] if dist.get(c) == h - 1 and (not along_w or c != along_w[0])]
    if not along_w or not along_h:
        raise LayoutFailed("border paths between corners have the wrong lengths")
    grid = np.full((h, w), -1, dtype=np.int64)
    grid[0, :], grid[:, 0] = _path(parent, along_w[0]), _path(parent, along_h[0])
    placed = set(grid[0].tolist()) | set(grid[:, 0].tolist())
    for r in range(h - 1):
        for x in range(1, w):
            cands = [v for v in adj[grid[r, x]] if v not in placed and grid[r + 1, x - 1] in adj[v]]
            if len(cands) != 1:
                raise LayoutFailed(f"ambiguous or missing node at ({r + 1}, {x})")
            grid[r + 1, x] = cands[0]
            placed.add(cands[0])
    pos = np.empty(n, dtype=np.int64)
    pos[grid.reshape(-1)] = np.arange(n)
    want = king_neighbours(h, w)
    if any({int(pos[u]) for u in adj[v]} != want[int(pos[v])] for v in range(n)):
        raise LayoutFailed("laid-out grid does not reproduce the adjacency")
    return pos


def symmetries(h: int, w: int) -> list[np.ndarray]:
    """Index maps of the grid's symmetries (8 dihedral ones for a square grid, 4 otherwise)."""
    idx = np.arange(h * w).reshape(h, w)
    maps = [idx, idx[::-1], idx[:, ::-1], idx[::-1, ::-1]]
    if h == w:
        maps += [idx.T, idx.T[::-1], idx.T[:, ::-1], idx.T[::-1, ::-1]]
    return [m.reshape(-1) for m in maps]


def windows(h: int, w: int, radius: int = 1) -> list[np.ndarray]:
    """For each grid position y * w + x, the positions within Chebyshev distance `radius` (itself included):
    the cells a (2 radius + 1)^2 'same' convolution reads there, and equally the positions that read it."""
    out = []
    for y in range(h):
        for x in range(w):
            ys = np.arange(max(0, y - radius), min(h, y + radius + 1))
            xs = np.arange(max(0, x - radius), min(w, x + radius + 1))
            out.append((ys[:, None] * w + xs[None, :]).reshape(-1))
    return out


def cover_cells(footprint: np.ndarray, size: int, wins: list[np.ndarray], counts: dict[int, int] | None = None,
                cap: int | None = None, limit: int = 2) -> list[np.ndarray]:
    """Sets of `size` cells whose windows cover exactly `footprint` (the positions that read a group), found
    by exact-cover search; with `counts`, position q must also read min(cells in its window, cap) = counts[q]
    of them. Returns up to `limit` solutions (two mean the footprint is ambiguous)."""
    foot = set(int(q) for q in footprint)
    cands = sorted(c for c in foot if set(wins[c].tolist()) <= foot)
    covering = {q: [c for c in cands if q in set(wins[c].tolist())] for q in foot}
    found: list[np.ndarray] = []

    def fits(chosen: list[int]) -> bool:
        if counts is None:
            return True
        seen: dict[int, int] = {}
        for c in chosen:
            for q in wins[c].tolist():
                seen[q] = seen.get(q, 0) + 1
        return all(min(seen.get(q, 0), cap or size) == n for q, n in counts.items())

    def search(chosen: list[int], banned: set[int]) -> None:
        if len(found) >= limit or len(chosen) + sum(c not in banned for c in cands) < size:
            return
        covered = set(q for c in chosen for q in wins[c].tolist())
        open_q = [q for q in foot if q not in covered]
        if open_q and len(chosen) == size:
            return
        if not open_q:
            spare = [c for c in cands if c not in banned and c not in chosen]
            for extra in combinations(spare, size - len(chosen)):
                if fits(chosen + list(extra)):
                    found.append(np.array(sorted(chosen + list(extra))))
                    if len(found) >= limit:
                        return
            return
        q = min(open_q, key=lambda p: sum(c not in banned for c in covering[p]))
        tried: set[int] = set()
        for c in covering[q]:
            if c in banned:
                continue
            search(chosen + [c], banned | tried | {c})
            tried.add(c)

    search([], set())
    return found
