"""Research datasets (host side): MNIST and Fashion-MNIST splits and plain test frames.

Research data is never shipped: MNIST is read from ../shared/data/mnist (or a user-given folder),
Fashion-MNIST from the Debian package dataset-fashion-mnist. The device reads only the ~500 shipped
sample frames (hardware.camera.samples) and IDX files (hardware.camera.idx) through its replay camera.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from base.errors import ConfigError
from hardware.camera.idx import read_idx
from hardware.camera.samples import load_samples

# dataset name -> (default folders searched in order, file names by split and kind)
_DEFAULT_ROOTS = {
    "mnist": [Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"],
    "fashion": [Path("/usr/share/datasets/fashion-mnist")],
}
_FILES = {
    "mnist": {("train", "images"): "train-images.idx3-ubyte.gz", ("train", "labels"): "train-labels.idx1-ubyte.gz",
              ("test", "images"): "t10k-images.idx3-ubyte.gz", ("test", "labels"): "t10k-labels.idx1-ubyte.gz"},
    "fashion": {("train", "images"): "train-images-idx3-ubyte.gz", ("train", "labels"): "train-labels-idx1-ubyte.gz",
                ("test", "images"): "t10k-images-idx3-ubyte.gz", ("test", "labels"): "t10k-labels-idx1-ubyte.gz"},
}


def dataset_root(name: str, root: str | Path | None = None) -> Path:
    """Find the folder holding dataset `name` (mnist | fashion)."""
    if name not in _FILES:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(_FILES))}")
    env = os.environ.get(f"KEYCAM_{name.upper()}_DIR")
    candidates = [Path(root)] if root else ([Path(env)] if env else []) + _DEFAULT_ROOTS[name]
    for folder in candidates:
        if (folder / _FILES[name][("test", "images")]).is_file():
            return folder.resolve()
    hint = ("apt-get install dataset-fashion-mnist" if name == "fashion"
            else "put the MNIST IDX .gz files in ../shared/data/mnist or pass --data-dir")
    raise ConfigError(f"dataset {name!r} not found in {', '.join(map(str, candidates))}: {hint}")


def load_dataset(name: str, split: str = "test", root: str | Path | None = None,
                 limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 28, 28), labels int64 (N,)) of a dataset split."""
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}; choose train or test")
    folder = dataset_root(name, root)
    images = read_idx(folder / _FILES[name][(split, "images")])
    labels = read_idx(folder / _FILES[name][(split, "labels")]).astype(np.int64)
    if len(images) != len(labels):
        raise ConfigError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def plain_frames(dataset: str | None, count: int, source: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Plain uint8 test frames and labels: from an .npz (frames, labels), or a dataset's test split
    (Fashion-MNIST, the default: the shipped samples)."""
    if source is not None:
        try:
            with np.load(source, allow_pickle=False) as data:
                return data["frames"][:count], data["labels"][:count]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"frame source {source} must be an .npz with 'frames' and 'labels': {exc}") from exc
    if dataset in (None, "", "fashion", "fashion_mnist", "fashion-mnist"):
        return load_samples(limit=count)
    return load_dataset(dataset, "test", limit=count)
