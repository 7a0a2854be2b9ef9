"""LFW arrays from the research data folder (README, Data: read in place, never copied into the repository)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base.errors import ConfigError

FACES_ENV = "KEYCAM_FACES_DIR"
TRAIN_FILE = "lfw_dfunneled_64_rgb.npz"
PAIRS_FILE = "lfw_dfunneled_112_rgb_pairs.npz"


def faces_dir(root: str | Path | None = None) -> Path:
    """The LFW folder: `root`, $KEYCAM_FACES_DIR, or the research data folder beside the repository (README, Data)."""
    if root is None:
        root = os.environ.get(FACES_ENV) or Path(__file__).resolve().parents[3] / "shared" / "data" / "faces"
    return Path(root)


def _load(name: str, root) -> np.lib.npyio.NpzFile:
    path = faces_dir(root) / name
    if not path.is_file():
        raise ConfigError(f"LFW file not found: {path} (set {FACES_ENV} to the folder holding {name})")
    return np.load(path, allow_pickle=False)


def train_faces(root=None, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The identity-disjoint train split of the 64x64 file: uint8 (N, 64, 64, 3), labels 0..K-1."""
    d = _load(TRAIN_FILE, root)
    keep = d["split"] == 0
    images, ids = d["images"][keep], d["identity"][keep]
    _, labels = np.unique(ids, return_inverse=True)
    return images[:limit], labels[:limit].astype(np.int64)


@dataclass
class Pairs:
    """LFW View-2 pairs: images (N, 112, 112, 3) uint8 and (P, 2) indices, same flags, folds."""
    images: np.ndarray
    pairs: np.ndarray
    same: np.ndarray
    fold: np.ndarray


def view2_pairs(root=None, folds: tuple[int, ...] = (1, 2)) -> Pairs:
    """The official View-2 pairs of the given folds, from the 112x112 file."""
    d = _load(PAIRS_FILE, root)
    keep = np.isin(d["pair_fold"], folds)
    if not keep.any():
        raise ConfigError(f"no LFW pairs in folds {folds}")
    return Pairs(d["images"], d["pair_idx"][keep], d["pair_same"][keep].astype(bool), d["pair_fold"][keep])


def balanced_subset(pairs: Pairs, limit: int) -> Pairs:
    """About `limit` pairs: the first limit/4 same and limit/4 different pairs of every fold.

    (pairs.txt lists each fold's same pairs first, so a plain prefix would hold no different pair.)
    """
    per = max(1, limit // (2 * len(np.unique(pairs.fold))))
    keep = np.concatenate([np.nonzero((pairs.fold == f) & (pairs.same == s))[0][:per]
                           for f in np.unique(pairs.fold) for s in (True, False)])
    return Pairs(pairs.images, pairs.pairs[keep], pairs.same[keep], pairs.fold[keep])


def to_chw_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float (N, 3*H*W) in [0, 1], CHW order (the keycam frame layout)."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1).astype(np.float64) / 255.0
