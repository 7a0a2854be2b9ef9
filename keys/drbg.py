"""Deterministic cryptographic random stream: every key is derived from a 256-bit device secret.

SHAKE-256(secret || label) is an extendable-output function: the same (secret, label) always gives
the same stream, different labels give independent streams, and nothing about the secret can be
recovered from the derived keys.
"""
from __future__ import annotations

import hashlib

import numpy as np

SECRET_BYTES = 32


class Drbg:
    """A labelled random stream derived from a 256-bit secret."""

    def __init__(self, secret: bytes, label: str):
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_BYTES:
            raise ValueError(f"a device secret must be exactly {SECRET_BYTES} bytes (256 bits)")
        self._xof = hashlib.shake_256(b"keycam/v1\x00" + bytes(secret) + b"\x00" + label.encode())
        self._used = 0
        self._buffer = b""

    def bytes(self, n: int) -> bytes:
        """Next n bytes of the stream."""
        end = self._used + n
        if end > len(self._buffer):  # grow geometrically so long streams stay linear-time
            self._buffer = self._xof.digest(max(end, 2 * len(self._buffer), 4096))
        out = self._buffer[self._used:end]
        self._used = end
        return out

    def _u64(self, n: int) -> np.ndarray:
        return np.frombuffer(self.bytes(8 * n), dtype="<u8")

    def uniform(self, n: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """n floats uniform in [low, high)."""
        u = (self._u64(n) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        return low + (high - low) * u

    def permutation(self, n: int) -> np.ndarray:
        """A uniformly random permutation of range(n) (ties among 64-bit draws are negligible)."""
        return np.argsort(self._u64(n), kind="stable").astype(np.int64)

    def child(self, label: str) -> Drbg:
        """An independent stream for a sub-component, derived from this stream."""
        return Drbg(self.bytes(SECRET_BYTES), label)
