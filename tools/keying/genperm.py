"""Keys in generalized-permutation form (one gather, one scale, one offset), the form keying and the per-op
rules reason about."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keys.factors import Bias, ChannelGenPerm, Gain, Key, Permutation


@dataclass(frozen=True)
class GenPerm:
    """A key in generalized-permutation form: y[i] = scale[i] * x[index[i]] + offset[i]."""
    index: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    @property
    def inverse_index(self) -> np.ndarray:
        """inv[j] = the output position that reads input j."""
        inv = np.empty_like(self.index)
        inv[self.index] = np.arange(len(self.index))
        return inv

    def inverse_linear(self, y: np.ndarray) -> np.ndarray:
        """L^-1 y (the offset not removed)."""
        x = np.empty_like(y, dtype=np.float64)
        x[self.index] = y / self.scale
        return x


def genperm_form(key: Key) -> GenPerm | None:
    """The key as one gather + scale + offset, or None when a factor mixes units (tile or dense mix)."""
    n = key.size
    index, scale, offset = np.arange(n), np.ones(n), np.zeros(n)
    for f in key.factors:
        if isinstance(f, Permutation):
            index, scale, offset = index[f.perm], scale[f.perm], offset[f.perm]
        elif isinstance(f, ChannelGenPerm):
            gather, g = f._index(f.perm), np.repeat(f.gain, f.spatial)
            index, scale, offset = index[gather], scale[gather] * g, offset[gather] * g
        elif isinstance(f, Gain):
            scale, offset = scale * f.g, offset * f.g
        elif isinstance(f, Bias):
            offset = offset + f.b
        else:
            return None
    return GenPerm(index, scale, offset)
