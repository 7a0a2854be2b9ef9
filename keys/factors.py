"""Invertible key factors and `Key`, their composition, acting on flattened activation vectors.

A key is an affine map x -> L x + c on vectors of length `size` (a flattened frame or activation in
C, H, W order), built from factors applied in order. Each factor has an exact inverse. Keys never
materialise a dense N x N matrix: factors apply directly, and `linear_csr` gives the sparse matrix.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from keys.container import KeyFileError, fingerprint, pack, unpack

KEY_MAGIC = b"KCAMKEY\x00"
INVERSE_TOLERANCE = 1e-9


def _gather_matrix(index: np.ndarray, weights: np.ndarray | None = None) -> sp.csr_matrix:
    """Sparse matrix with row i holding weights[i] at column index[i] (y = w * x[index])."""
    n = len(index)
    data = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    return sp.csr_matrix((data, (np.arange(n), index)), shape=(n, n))


@dataclass
class Permutation:
    """y[i] = x[perm[i]]: a global pixel/unit shuffle."""
    perm: np.ndarray
    kind = "perm"

    def __post_init__(self):
        self.perm = np.asarray(self.perm, dtype=np.int64)
        n = len(self.perm)
        if n == 0 or not np.array_equal(np.sort(self.perm), np.arange(n)):
            raise KeyFileError("permutation factor is not a permutation of 0..n-1")
        self.inv = np.argsort(self.perm)

    def apply(self, x):
        return x[..., self.perm]

    def apply_inverse(self, y):
        return y[..., self.inv]

    def matrix(self):
        return _gather_matrix(self.perm)

    def inverse_matrix(self):
        return _gather_matrix(self.inv)

    def arrays(self):
        return {"perm": self.perm}


@dataclass
class Gain:
    """y = g * x with g > 0 (positive gains commute with ReLU and LeakyReLU)."""
    g: np.ndarray
    kind = "gain"

    def __post_init__(self):
        self.g = np.asarray(self.g, dtype=np.float64)
        if not np.all(np.isfinite(self.g)) or np.any(self.g <= 0):
            raise KeyFileError("gain factor must be finite and strictly positive")

    def apply(self, x):
        return x * self.g

    def apply_inverse(self, y):
        return y / self.g

    def matrix(self):
        return sp.diags(self.g, format="csr")

    def inverse_matrix(self):
        return sp.diags(1.0 / self.g, format="csr")

    def arrays(self):
        return {"g": self.g}


@dataclass
class Bias:
    """y = x + b: the affine offset of the sensor key (bias noise before the ADC)."""
    b: np.ndarray
    kind = "bias"

    def __post_init__(self):
        self.b = np.asarray(self.b, dtype=np.float64)

    def apply(self, x):
        return x + self.b

    def apply_inverse(self, y):
        return y - self.b

    def matrix(self):
        return sp.identity(len(self.b), format="csr")

    inverse_matrix = matrix

    def arrays(self):
        return {"b": self.b}


@dataclass
class TileMix:
    """Local mixing: each tile (a group of pixels) is mixed by its own invertible matrix (the sensor keys
    use non-negative ones whose rows sum to 1)."""
    groups: np.ndarray   # (tiles, t) indices into the vector
    mats: np.ndarray     # (tiles, t, t) invertible
    kind = "tilemix"

    def __post_init__(self):
        self.groups = np.asarray(self.groups, dtype=np.int64)
        self.mats = np.asarray(self.mats, dtype=np.float64)
        if self.mats.shape != self.groups.shape + (self.groups.shape[1],):
            raise KeyFileError("tile-mix factor: groups and matrices disagree in shape")
        flat = np.sort(self.groups.reshape(-1))
        if len(np.unique(flat)) != flat.size:
            raise KeyFileError("tile-mix factor: tiles overlap")
        try:
            self.inv = np.linalg.inv(self.mats)
        except np.linalg.LinAlgError as exc:
            raise KeyFileError("tile-mix factor has a singular tile") from exc
        eye = np.eye(self.mats.shape[1])
        err = np.max(np.abs(self.mats @ self.inv - eye))
        if err > INVERSE_TOLERANCE:
            raise KeyFileError(f"tile-mix factor is ill-conditioned (inverse error {err:.1e})")

    def _mix(self, x, mats):
        y = np.array(x, dtype=np.result_type(x, np.float64), copy=True)
        y[..., self.groups] = np.einsum("tij,...tj->...ti", mats, x[..., self.groups])
        return y

    def apply(self, x):
        return self._mix(x, self.mats)

    def apply_inverse(self, y):
        return self._mix(y, self.inv)

    def _block(self, mats, n):
        t = self.groups.shape[1]
        rows = np.repeat(self.groups, t, axis=1).reshape(-1)
        cols = np.tile(self.groups, (1, t)).reshape(-1)
        m = sp.csr_matrix((mats.reshape(-1), (rows, cols)), shape=(n, n))
        untouched = np.setdiff1d(np.arange(n), self.groups.reshape(-1))
        return m + sp.csr_matrix((np.ones(len(untouched)), (untouched, untouched)), shape=(n, n))

    def matrix(self, n):
        return self._block(self.mats, n)

    def inverse_matrix(self, n):
        return self._block(self.inv, n)

    def arrays(self):
        return {"groups": self.groups, "mats": self.mats}


@dataclass
class ChannelGenPerm:
    """Per-channel key on a (C, H, W)-ordered vector: output channel c = gain[c] * input channel perm[c].

    The same on every spatial position, so a convolution keyed by it stays a convolution.
    """
    perm: np.ndarray
    gain: np.ndarray
    spatial: int
    kind = "chanperm"

    def __post_init__(self):
        self.perm = np.asarray(self.perm, dtype=np.int64)
        self.gain = np.asarray(self.gain, dtype=np.float64)
        self.spatial = int(self.spatial)
        if not np.array_equal(np.sort(self.perm), np.arange(len(self.perm))) or np.any(self.gain <= 0):
            raise KeyFileError("channel key: not a permutation or non-positive gains")
        self.inv = np.argsort(self.perm)

    def _index(self, perm):
        return (perm[:, None] * self.spatial + np.arange(self.spatial)[None, :]).reshape(-1)

    def apply(self, x):
        return x[..., self._index(self.perm)] * np.repeat(self.gain, self.spatial)

    def apply_inverse(self, y):
        return (y / np.repeat(self.gain, self.spatial))[..., self._index(self.inv)]

    def matrix(self):
        return _gather_matrix(self._index(self.perm), np.repeat(self.gain, self.spatial))

    def inverse_matrix(self):
        # x[perm[c]] = y[c] / gain[c]  =>  x[j] = y[inv[j]] / gain[inv[j]]
        return _gather_matrix(self._index(self.inv), np.repeat(1.0 / self.gain[self.inv], self.spatial))

    def arrays(self):
        return {"perm": self.perm, "gain": self.gain, "spatial": np.array([self.spatial], dtype=np.int64)}


@dataclass
class DenseMix:
    """y = M x with a dense invertible M: used for the output (logit) key."""
    m: np.ndarray
    kind = "dense"

    def __post_init__(self):
        self.m = np.asarray(self.m, dtype=np.float64)
        try:
            self.inv = np.linalg.inv(self.m)
        except np.linalg.LinAlgError as exc:
            raise KeyFileError("dense key factor is singular") from exc

    def apply(self, x):
        return x @ self.m.T

    def apply_inverse(self, y):
        return y @ self.inv.T

    def matrix(self):
        return sp.csr_matrix(self.m)

    def inverse_matrix(self):
        return sp.csr_matrix(self.inv)

    def arrays(self):
        return {"m": self.m}


FACTOR_TYPES = {cls.kind: cls for cls in (Permutation, Gain, Bias, TileMix, ChannelGenPerm, DenseMix)}


def _factor_from_arrays(kind: str, arrays: dict) -> object:
    if kind not in FACTOR_TYPES:
        raise KeyFileError(f"unknown key factor type {kind!r}")
    if kind == "chanperm":
        return ChannelGenPerm(arrays["perm"], arrays["gain"], int(arrays["spatial"][0]))
    return FACTOR_TYPES[kind](**arrays)


@dataclass
class Key:
    """An invertible affine key x -> L x + c on vectors of length `size`, as a list of factors."""
    size: int
    factors: list = field(default_factory=list)
    name: str = ""

    def __post_init__(self):
        for f in self.factors:
            n = f.groups.max() + 1 if isinstance(f, TileMix) else self._factor_size(f)
            if n > self.size or (not isinstance(f, TileMix) and n != self.size):
                raise KeyFileError(f"key {self.name!r}: a {f.kind} factor has size {n}, key size is {self.size}")

    @staticmethod
    def _factor_size(f) -> int:
        if isinstance(f, ChannelGenPerm):
            return len(f.perm) * f.spatial
        if isinstance(f, DenseMix):
            return f.m.shape[0]
        return len(next(iter(f.arrays().values())))

    def _check(self, x):
        if np.shape(x)[-1] != self.size:
            raise ValueError(f"key {self.name!r} acts on vectors of length {self.size}, got {np.shape(x)[-1]}")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Key a (..., size) array."""
        self._check(x)
        for f in self.factors:
            x = f.apply(x)
        return x

    def apply_inverse(self, y: np.ndarray) -> np.ndarray:
        """Undo `apply` exactly (up to float rounding)."""
        self._check(y)
        for f in reversed(self.factors):
            y = f.apply_inverse(y)
        return y

    def _mat(self, f, inverse: bool):
        if isinstance(f, TileMix):
            return f.inverse_matrix(self.size) if inverse else f.matrix(self.size)
        return f.inverse_matrix() if inverse else f.matrix()

    def linear_csr(self) -> sp.csr_matrix:
        """The linear part L as a sparse matrix."""
        m = sp.identity(self.size, format="csr")
        for f in self.factors:
            m = self._mat(f, False) @ m
        return m.tocsr()

    def inverse_linear_csr(self) -> sp.csr_matrix:
        """L^-1 as a sparse matrix."""
        m = sp.identity(self.size, format="csr")
        for f in reversed(self.factors):
            m = self._mat(f, True) @ m
        return m.tocsr()

    def offset(self) -> np.ndarray:
        """The affine offset c (zero for purely linear keys)."""
        return self.apply(np.zeros(self.size))

    @property
    def is_positive_generalized_permutation(self) -> bool:
        """True when the key commutes with ReLU / LeakyReLU (positive diagonal x permutation)."""
        return all(isinstance(f, (Permutation, Gain, ChannelGenPerm)) for f in self.factors)

    def to_bytes(self) -> bytes:
        """Canonical, versioned serialisation (no pickle)."""
        header = {"size": int(self.size), "name": self.name, "factors": [f.kind for f in self.factors]}
        arrays = {f"{i}.{k}": v for i, f in enumerate(self.factors) for k, v in f.arrays().items()}
        return pack(KEY_MAGIC, header, arrays)

    @classmethod
    def from_bytes(cls, blob: bytes, what: str = "key file") -> Key:
        """Parse `to_bytes` output; corrupted or truncated input raises KeyFileError."""
        header, arrays = unpack(KEY_MAGIC, blob, what)
        try:
            factors = []
            for i, kind in enumerate(header["factors"]):
                prefix = f"{i}."
                own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
                factors.append(_factor_from_arrays(kind, own))
            return cls(int(header["size"]), factors, header.get("name", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyFileError(f"{what} has an invalid key description: {exc}") from exc

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the canonical form."""
        return fingerprint(self.to_bytes())
