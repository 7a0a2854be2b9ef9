"""Calibration frames for int8 keying: from a path the user gives (a folder of images or an .npz of frames in
the model's input size), else from the model's dataset metadata, else the shipped sample frames. Every
source says what it is, so provisioning can tell the user which frames it calibrated on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base.errors import ConfigError
from hardware.camera.samples import load_samples
from hardware.digitise import fit_to_input
from tools.datasets import load_dataset
from tools.ir import Network

CALIBRATION_FRAMES = 256
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm")


@dataclass
class Calibration:
    """Plain float frames (N, C*H*W) in [0, 1] in CHW order, and where they came from."""
    frames: np.ndarray
    source: str


def fit_frames(images: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """uint8 frames as float CHW vectors (N, C*H*W) in [0, 1] for a model input `shape` (hardware.digitise.fit_to_input:
    smaller grey frames are centre-padded and repeated over the channels)."""
    fitted = fit_to_input(images, shape, what)
    return fitted.reshape(len(fitted), -1).astype(np.float64) / 255.0


def _from_path(path: Path, net: Network, limit: int) -> np.ndarray:
    if path.is_dir():
        from PIL import Image
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise ConfigError(f"calibration folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        mode = "L" if len(net.input_shape) == 3 and net.input_shape[0] == 1 else "RGB"
        try:
            images = np.stack([np.asarray(Image.open(f).convert(mode)) for f in files])
        except (OSError, ValueError) as exc:
            raise ConfigError(f"calibration folder {path}: unreadable image or mixed sizes ({exc})") from exc
        return images
    if path.suffix.lower() != ".npz":
        raise ConfigError(f"calibration {path}: give a folder of images or an .npz of frames")
    try:
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in ("frames", "images", "x") if k in data.files), data.files[0] if data.files else None)
            if key is None:
                raise ConfigError(f"calibration {path} holds no arrays")
            images = data[key][:limit]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"calibration {path} is not a readable .npz ({exc})") from exc
    if images.dtype != np.uint8:
        if images.size and (images.min() < 0 or images.max() > 1):
            raise ConfigError(f"calibration {path}: float frames must lie in [0, 1] (or give uint8 frames)")
        images = np.rint(images * 255).astype(np.uint8)
    if images.ndim == 4 and len(net.input_shape) == 3 and images.shape[1] == net.input_shape[0] \
            and images.shape[-1] != net.input_shape[0]:
        images = images.transpose(0, 2, 3, 1)                     # (N, C, H, W) -> (N, H, W, C)
    return images


def calibration_for(net: Network, path: str | Path | None = None, limit: int = CALIBRATION_FRAMES) -> Calibration:
    """Calibration frames for `net`: from `path`, else its dataset metadata's training split, else the shipped
    samples."""
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"calibration path not found: {path}")
        images = _from_path(path, net, limit)
        return Calibration(fit_frames(images, tuple(net.input_shape), str(path)), f"{len(images)} frames from {path}")
    dataset = net.meta.get("dataset")
    try:
        if not dataset:
            raise ConfigError("no dataset in the model's metadata")
        images, _ = load_dataset(dataset, "train", limit=limit)
        source = f"{len(images)} frames of the {dataset} training split (the model's dataset metadata)"
    except ConfigError as exc:
        images, _ = load_samples(limit)
        source = f"{len(images)} shipped sample frames ({exc})"
    return Calibration(fit_frames(images, tuple(net.input_shape), source), source)
