"""Key helpers of the keyed SAN stage: the key as a pixel permutation, the keyed frame's layout, and the check
that a .tflite stores no run of the key's permutation in clear."""
from __future__ import annotations

import numpy as np

from keys.factors import Key
from tools.san.errors import SanModelError
from tools.tflite.writer import hwc_to_chw_order


def permutation_of(key: Key, size: int) -> np.ndarray:
    """perm with key.apply(x) == x[perm], or a SanModelError when the key is not a pure pixel permutation."""
    if key.size != size:
        raise SanModelError(f"the key acts on {key.size} values; the stage's frames have {size}")
    lin = key.linear_csr().tocsr()
    lin.sum_duplicates()
    if (np.any(np.diff(lin.indptr) != 1) or not np.allclose(lin.data, 1.0, atol=1e-12) or np.any(key.offset() != 0)
            or len(np.unique(lin.indices)) != size):
        raise SanModelError("the key is not a pixel permutation (gains, offsets or mixing): the SAN stage's sigmoid "
                            "and clamp commute only with permutations, so the face model it feeds must be "
                            "provisioned with a permutation-only sensor key")
    return lin.indices.astype(np.int64)


def frame_index(perm: np.ndarray, size: int) -> np.ndarray:
    """G with t = x_chw[G]: the keyed frame's stored (HWC) element j holds plain CHW value G[j]."""
    return perm[hwc_to_chw_order((3, size, size))]


def longest_run(blob: bytes, p: np.ndarray, dtype) -> int:
    """The longest run of consecutive entries of p (p[a], p[a+1], ...) stored anywhere in `blob` as `dtype`."""
    n, size = len(p), np.dtype(dtype).itemsize
    following = np.full(n, -1, np.int64)
    following[p[:-1]] = p[1:]
    best = 0
    for start in range(size):                     # every byte alignment
        values = np.frombuffer(blob, dtype, (len(blob) - start) // size, start).astype(np.int64)
        inside = (values[:-1] >= 0) & (values[:-1] < n)
        hit = inside & (values[1:] == following[np.where(inside, values[:-1], 0)])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], hit.astype(np.int8), [0]])))
        if len(edges):
            best = max(best, int((edges[1::2] - edges[::2]).max()) + 1)
    return best


def clear_key_findings(blob: bytes, key: Key, size: int, run: int = 16) -> list[str]:
    """What of the key a .tflite stores in clear: `run` consecutive entries of the key's permutation or its
    inverse (on CHW vectors, from the HWC frame to CHW, or within HWC) as uint16 (the same bytes as int16 below
    2**15), int32 or int64 values at any byte offset (whole index vectors included), e.g. the indices of a
    GATHER that un-keys the frame.

    A GATHER op as such is no finding: the int8 stage's GATHERs take the keyed sparsity pattern (the column
    indices the float stage's CSR weights store too), not K."""
    perm = permutation_of(key, 3 * size * size)
    order = hwc_to_chw_order((3, size, size))
    variants = (("permutation", perm), ("frame index", perm[order]),
                ("HWC permutation", np.argsort(order)[perm[order]]))
    found = []
    for name, p in variants:
        for what, q in ((name, p), (f"inverse {name}", np.argsort(p))):
            for dtype in (np.uint16, np.int32, np.int64):
                if q.max() < np.iinfo(dtype).max and longest_run(blob, q, dtype) >= run:
                    found.append(f"{what} as {np.dtype(dtype).name}")
    return found
