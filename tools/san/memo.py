"""On-disk memo of deterministic computations, keyed by a content digest, under keycam's cache folder."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np

CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keycam"
T = TypeVar("T")


def digest(*parts: bytes) -> str:
    """The memo key: the first 24 hex digits of the SHA-256 of `parts` concatenated."""
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part)
    return sha.hexdigest()[:24]


def array_digest(array: np.ndarray) -> str:
    """`digest` of an array's bytes and its shape."""
    return digest(array.tobytes(), str(array.shape).encode())


def _save_array(value: np.ndarray, file: BinaryIO) -> None:
    np.save(file, value)


def memoised(cache_dir: Path | None, name: str, compute: Callable[[], T], load: Callable[[Path], T] = np.load,
             save: Callable[[T, BinaryIO], None] = _save_array) -> T:
    """`load(cache_dir / name)` when that file exists, else `compute()` stored there by `save` (defaults: a .npy
    array); written to a temporary file in the same folder and renamed, so no reader sees a partial file. No
    memo when `cache_dir` is None."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / name
    if path.is_file():
        return load(path)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as file:
            save(value, file)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return value
