"""Image datasets keycam reads: IDX (MNIST, Fashion-MNIST) files and the shipped sample frames.

Research data is never shipped: MNIST is read from ../shared/data/mnist (or a user-given folder),
Fashion-MNIST from the Debian package dataset-fashion-mnist. Only ~500 Fashion-MNIST test frames
(MIT licence) ship inside the package, for the demo, replay camera and deploy health checks.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from edge.errors import ConfigError

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
SAMPLES_FILE = PACKAGE_DATA / "fashion_samples.npz"
FASHION_LABELS = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "ankle boot")
MNIST_LABELS = tuple(str(d) for d in range(10))

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
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ConfigError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ConfigError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ConfigError(f"{path} is truncated or corrupt: {len(data) - header} data bytes, "
                          f"header says {expected} for shape {shape}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


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


def load_samples(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return the shipped Fashion-MNIST sample frames (uint8 (N, 28, 28)) and labels."""
    if not SAMPLES_FILE.is_file():
        raise ConfigError(f"shipped sample frames are missing: {SAMPLES_FILE}")
    with np.load(SAMPLES_FILE, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    return (images[:limit], labels[:limit]) if limit is not None else (images, labels)


def labels_for(name: str) -> tuple[str, ...]:
    """Human-readable class names of a dataset."""
    return FASHION_LABELS if name == "fashion" else MNIST_LABELS


def fit_to_input(images: np.ndarray, shape: tuple[int, ...], what: str = "frames") -> np.ndarray:
    """uint8 frames (N, H, W) or (N, H, W, C) as uint8 (N,) + `shape` for a model input (C, H, W) or (N,):
    smaller grey frames are centre-padded and repeated over the channels (how the Fashion-MNIST zoo models
    take 28x28 frames at 32x32x3); anything else must match exactly."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ConfigError(f"{what}: frames must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
    if len(shape) == 1:
        if int(np.prod(images.shape[1:])) != shape[0]:
            raise ConfigError(f"{what}: frames of {images.shape[1:]} do not fit the model's {shape[0]} inputs")
        return images.reshape(len(images), shape[0])
    c, h, w = shape
    n, fh, fw, fc = images.shape
    if fh > h or fw > w:
        raise ConfigError(f"{what}: frames are {fh}x{fw}, the model takes {h}x{w}")
    if fc != c and fc != 1:
        raise ConfigError(f"{what}: frames have {fc} channels, the model takes {c}")
    top, left = (h - fh) // 2, (w - fw) // 2
    images = np.pad(images, ((0, 0), (top, h - fh - top), (left, w - fw - left), (0, 0)))
    return np.repeat(images, c // fc, axis=3).transpose(0, 3, 1, 2)
