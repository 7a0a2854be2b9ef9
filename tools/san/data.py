"""LFW face data (the shared 64x64 and 112x112 .npz files), gender prototypes and balanced sampling."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hardware.face_align import FaceAligner
from hardware.preadc import quantise
from tools.face.data import FACES_ENV
from tools.face.data import faces_dir as faces_root
from tools.san.errors import FaceDataError
from tools.san.memo import CACHE_ROOT, array_digest, memoised

FACES_64 = "lfw_dfunneled_64_rgb.npz"
PAIRS_112 = "lfw_dfunneled_112_rgb_pairs.npz"
FEMALE, MALE, NEUTRAL = 0, 1, 2
SPLITS = ("train", "test", "fit", "validation")
VALIDATION_FRACTION = 0.2     # of the train people: the operating point is chosen on them, nothing trains on them
ALIGN_CACHE = CACHE_ROOT / "aligned"


@dataclass(frozen=True)
class FaceSet:
    """Face images (uint8 N,H,W,3 RGB) with labels and official LFW pairs (indices into images)."""

    images: np.ndarray
    gender: np.ndarray
    identity: np.ndarray
    pair_idx: np.ndarray
    pair_same: np.ndarray
    fold: np.ndarray          # per image: the LFW View-2 fold of its person's pairs, -1 when in no pair

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, keep: np.ndarray) -> FaceSet:
        """The images selected by boolean mask `keep`; only pairs with both images kept survive (re-indexed)."""
        return _subset({"images": self.images, "gender": self.gender, "identity": self.identity,
                        "pair_idx": self.pair_idx, "pair_same": self.pair_same, "fold": self.fold}, keep)


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FaceDataError(f"face data file {path} not found: pass --faces-dir or set ${FACES_ENV} "
                            "to the folder holding the LFW .npz files (../shared/data/faces)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise FaceDataError(f"{path} is not a readable .npz file: {exc}") from exc
    missing = {"images", "gender", "identity", "pair_idx", "pair_same"} - set(arrays)
    if missing:
        raise FaceDataError(f"{path} lacks arrays {sorted(missing)}")
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise FaceDataError(f"{path}: images must be uint8 (N,H,W,3), got {images.dtype} {images.shape}")
    return arrays


def _subset(arrays: dict[str, np.ndarray], keep: np.ndarray) -> FaceSet:
    """Images selected by boolean mask `keep`; only pairs with both images kept survive (re-indexed)."""
    new_index = np.full(len(keep), -1, dtype=np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    pairs = new_index[arrays["pair_idx"]]
    ok = (pairs >= 0).all(axis=1)
    fold = arrays["fold"] if "fold" in arrays else image_folds(arrays)
    return FaceSet(images=arrays["images"][keep], gender=arrays["gender"][keep].astype(np.int64),
                   identity=arrays["identity"][keep].astype(np.int64), pair_idx=pairs[ok],
                   pair_same=arrays["pair_same"][ok].astype(bool), fold=fold[keep])


def image_folds(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Per image, the LFW View-2 fold of its person (folds are identity-disjoint), from the file's pairs
    (`pair_fold`); -1 for people in no pair of the file, or when the file has no `pair_fold`."""
    identity = arrays["identity"].astype(np.int64)
    by_person = np.full(int(identity.max(initial=-1)) + 1, -1, dtype=np.int64)
    if "pair_fold" in arrays:
        for column in (0, 1):
            by_person[identity[arrays["pair_idx"][:, column]]] = arrays["pair_fold"]
    return by_person[identity]


def validation_people(identity: np.ndarray, names: np.ndarray | None = None) -> np.ndarray:
    """Per image: does its person belong to the validation people? A fixed VALIDATION_FRACTION of the people,
    chosen by a hash of the person's name (or id), so the split is identity-disjoint and stable."""
    keys = names if names is not None else identity
    def bucket(key) -> float:
        return int(hashlib.sha256(str(key).encode()).hexdigest()[:8], 16) / 2 ** 32
    person = {k: bucket(k) < VALIDATION_FRACTION for k in np.unique(keys)}
    return np.array([person[k] for k in keys], dtype=bool)


def aligned(images: np.ndarray, cache_dir: Path | None = ALIGN_CACHE) -> np.ndarray:
    """`images` aligned to the 5-point template (hardware.face_align) at their own size; memoised on disk
    under the images' content hash (alignment is deterministic)."""
    if len(images) == 0:
        return images
    return memoised(cache_dir, f"aligned-{array_digest(images)}.npy",
                    lambda: FaceAligner(images.shape[1]).align_batch(images))


def load_faces64(split: str, faces_dir: Path | None = None, limit: int | None = None, align: bool = True) -> FaceSet:
    """A part of the 64x64 file: 'train' (split 0), 'test' (split 1, people of View-2 folds 1-2), or the train
    people divided into 'fit' (everything is trained on them) and 'validation' (choices are made on them).
    Faces are aligned to the 5-point template unless `align` is False."""
    if split not in SPLITS:
        raise FaceDataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    arrays = _load(faces_root(faces_dir) / FACES_64)
    if "split" not in arrays:
        raise FaceDataError(f"{FACES_64} lacks the 'split' array")
    keep = arrays["split"] == (1 if split == "test" else 0)
    if split in ("fit", "validation"):
        held = validation_people(arrays["identity"], arrays.get("names"))
        keep &= held if split == "validation" else ~held
    if limit is not None:
        keep &= np.cumsum(keep) <= limit
    return _with_aligned(_subset(arrays, keep), align)


def load_pairs112(faces_dir: Path | None = None, limit: int | None = None, align: bool = True) -> FaceSet:
    """The 112x112 file: every image of LFW View-2 folds 1-2 with the 1,200 official pairs (aligned unless not
    `align`)."""
    arrays = _load(faces_root(faces_dir) / PAIRS_112)
    keep = np.ones(len(arrays["images"]), dtype=bool)
    if limit is not None:
        keep &= np.arange(len(keep)) < limit
    return _with_aligned(_subset(arrays, keep), align)


def _with_aligned(fs: FaceSet, align: bool) -> FaceSet:
    return replace(fs, images=aligned(fs.images)) if align else fs


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W,C) -> float32 (N,C,H,W) in [0,1]."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float (N,C,H,W) in [0,1] -> uint8 (N,H,W,C)."""
    return quantise(images.transpose(0, 2, 3, 1))


def downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Area-average float images (N,C,H,W) by an integer factor (H, W must be multiples of it)."""
    n, c, h, w = images.shape
    if h % factor or w % factor:
        raise FaceDataError(f"image size {h}x{w} is not a multiple of {factor}")
    return images.reshape(n, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


def prototypes(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average faces float32 (3,C,H,W): [label 0, label 1, neutral]; the neutral one weighs both labels equally.

    `images` is float (N,C,H,W); entries with a label outside {0,1} only count for nothing.
    """
    means = []
    for value in (0, 1):
        members = images[labels == value]
        if len(members) == 0:
            raise FaceDataError(f"no training image has label {value}: cannot build its prototype")
        means.append(members.mean(axis=0))
    return np.stack([means[0], means[1], (means[0] + means[1]) / 2]).astype(np.float32)


def balanced_epoch(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch of indices where every label in {0,1} appears as often as the majority one.

    The under-represented group is oversampled (drawn with replacement); the majority is a permutation.
    """
    groups = [np.flatnonzero(labels == value) for value in (0, 1)]
    if min(len(g) for g in groups) == 0:
        raise FaceDataError("balanced sampling needs examples of both labels")
    size = max(len(g) for g in groups)
    parts = [g[rng.permutation(len(g))] if len(g) == size else rng.choice(g, size, replace=True)
             for g in groups]
    epoch = np.concatenate(parts)
    return epoch[rng.permutation(len(epoch))]
