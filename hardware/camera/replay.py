"""The replay camera (type `replay`): frames from files, an array or the shipped samples.

Sources: an image folder, an .npz (key 'images', optional 'labels'), an IDX file (MNIST format), an
array, or 'samples' (hardware.camera.samples). Faults (stall, disconnect, bad frame) can be injected
to exercise the fail-closed paths of a pipeline.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base.errors import ConfigError
from base.schema import NON_NEGATIVE, Rule, Section, resolve_path, setting
from hardware.camera.base import Camera, Capture
from hardware.camera.idx import read_idx
from hardware.camera.samples import SAMPLES, load_samples
from hardware.errors import CameraDisconnected, CameraEndOfStream, CameraTimeout

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff")


@dataclass(frozen=True)
class ReplayFaults(Section):
    """Faults a ReplayCamera can inject, counted in frames delivered since the last open()."""

    stall_after: int | None = setting(None, rule=NON_NEGATIVE)        # then read() times out
    disconnect_after: int | None = setting(None, rule=NON_NEGATIVE)   # then read() raises CameraDisconnected
    bad_frame_at: int | None = setting(None, rule=NON_NEGATIVE)       # this delivered frame has the wrong shape


class ReplaySource(str):
    """A replay source in a config: 'samples', or a path resolved against the config file's folder
    (checked when the camera loads it, so a config can name a folder filled later)."""

    @classmethod
    def from_config(cls, value: object, where: str, base: Path) -> ReplaySource:
        if value == SAMPLES:
            return cls(value)
        return cls(os.fspath(resolve_path(value, where, base)))


@dataclass(frozen=True)
class ReplayConfig(Section):
    """The `camera` section of a replay camera (see ReplayCamera)."""

    type: str
    source: ReplaySource                  # folder, .npz, IDX file or 'samples'
    fps: float | None = setting(None, rule=Rule(lambda v: v > 0, "must be > 0 (or null for as fast as possible)"))
    loop: bool = True
    limit: int | None = setting(None, rule=Rule(lambda v: v >= 1, "must be >= 1"))
    faults: ReplayFaults | None = None


def to_linear_float(images: np.ndarray, what: str) -> np.ndarray:
    """uint8/uint16 codes or [0,1] floats -> float32 in [0, 1]; anything else is a ConfigError."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    if images.dtype == np.uint16:
        return images.astype(np.float32) / np.float32(65535)
    if np.issubdtype(images.dtype, np.floating):
        out = images.astype(np.float32)
        if out.size and (not np.all(np.isfinite(out)) or out.min() < 0 or out.max() > 1):
            raise ConfigError(f"{what}: float images must hold values in [0, 1]")
        return out
    raise ConfigError(f"{what}: unsupported image dtype {images.dtype} (use uint8, uint16 or float in [0,1])")


def _read_folder(folder: Path) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + (".npy",))
    if not files:
        raise ConfigError(f"replay folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}, .npy)")
    arrays = []
    for path in files:
        if path.suffix.lower() == ".npy":
            arrays.append(to_linear_float(np.load(path, allow_pickle=False), str(path)))
            continue
        try:
            from PIL import Image
        except ImportError as exc:
            raise ConfigError("reading image files needs Pillow: pip install pillow "
                              "(or store frames as .npy / .npz)") from exc
        try:
            with Image.open(path) as im:
                arrays.append(to_linear_float(np.asarray(im), str(path)))
        except OSError as exc:
            raise ConfigError(f"cannot read image {path}: {exc}") from exc
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ConfigError(f"replay folder {folder}: images differ in shape {sorted(shapes)}")
    return np.stack(arrays)


def load_replay_source(source: str | Path | np.ndarray, limit: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """Load replay frames (float32 (N, H, W[, C]) in [0, 1]) and labels (or None) from a source."""
    labels = None
    if isinstance(source, np.ndarray):
        images = to_linear_float(source, "replay array")
    elif str(source) == SAMPLES:
        raw, labels = load_samples()
        images = to_linear_float(raw, "shipped samples")
    else:
        path = Path(source)
        if path.is_dir():
            images = _read_folder(path)
        elif not path.is_file():
            raise ConfigError(f"replay source {path} does not exist (give a folder, .npz, IDX file or 'samples')")
        elif path.suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as data:
                    if "images" not in data:
                        raise ConfigError(f"{path} has no 'images' array (keys: {', '.join(data.files)})")
                    images = to_linear_float(data["images"], str(path))
                    labels = data["labels"].astype(np.int64) if "labels" in data else None
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
        else:
            images = to_linear_float(read_idx(path), str(path))
    if images.ndim not in (3, 4) or images.shape[0] == 0 or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise ConfigError(f"replay source {source if not isinstance(source, np.ndarray) else 'array'}: "
                          f"expected N >= 1 images of shape (H, W) or (H, W, C), got {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise ConfigError(f"replay source {source}: {len(images)} images but {len(labels)} labels")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"replay limit must be >= 1, got {limit}")
        images = images[:limit]
        labels = labels[:limit] if labels is not None else None
    return images, labels


class ReplayCamera(Camera):
    """Frames from an image folder, an .npz (key 'images', optional 'labels'), an IDX file, an array
    or 'samples' (the shipped Fashion-MNIST frames).

    fps=None delivers frames as fast as they are read. With fps set, frame k is "captured" at
    open_time + k / fps whether or not anyone reads it; a reader slower than fps gets the newest frame
    and the skipped ones count as dropped (like a sensor with a one-frame buffer). loop=False raises
    CameraEndOfStream after the last frame. limit keeps only the first `limit` source images.
    """

    def __init__(self, source: str | Path | np.ndarray, fps: float | None = None, loop: bool = True,
                 limit: int | None = None, faults: ReplayFaults | None = None):
        super().__init__()
        if fps is not None and not fps > 0:
            raise ConfigError(f"replay fps must be > 0 (or None for as fast as possible), got {fps}")
        self.source = source
        self.fps, self.loop = fps, loop
        self.faults = faults or ReplayFaults()
        self.images, self.labels = load_replay_source(source, limit)
        self._next = 0
        self._delivered = 0
        self._t0 = 0.0

    @classmethod
    def from_config(cls, cfg: ReplayConfig) -> ReplayCamera:
        """The camera a validated `camera:` section of type replay describes."""
        return cls(cfg.source, fps=cfg.fps, loop=cfg.loop, limit=cfg.limit, faults=cfg.faults)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def _open(self) -> None:
        self._next, self._delivered, self._dropped = 0, 0, 0
        self._t0 = time.monotonic()

    def _close(self) -> None:
        pass

    def _capture(self, timeout: float) -> Capture:
        f = self.faults
        if f.disconnect_after is not None and self._delivered >= f.disconnect_after:
            self._opened = False
            raise CameraDisconnected(f"replay camera disappeared after {self._delivered} frames (injected fault)")
        if f.stall_after is not None and self._delivered >= f.stall_after:
            time.sleep(timeout)
            raise CameraTimeout(f"no frame within {timeout}s: the camera stopped delivering "
                                f"after {self._delivered} frames")
        k = self._next
        if self.fps is not None:
            newest = int((time.monotonic() - self._t0) * self.fps)
            if newest >= k:
                k = newest
            else:
                wait = self._t0 + k / self.fps - time.monotonic()
                if wait > timeout:
                    time.sleep(timeout)
                    raise CameraTimeout(f"no frame within {timeout}s (replay runs at {self.fps} fps)")
                time.sleep(max(0.0, wait))
        if not self.loop and k >= len(self.images):
            raise CameraEndOfStream(f"replay source exhausted after {len(self.images)} frames (loop is off)")
        self._dropped += k - self._next
        self._next = k + 1
        self._delivered += 1
        index = k % len(self.images)
        image = self.images[index].copy()
        if f.bad_frame_at is not None and self._delivered - 1 == f.bad_frame_at:
            image = image[:-1]
        label = int(self.labels[index]) if self.labels is not None else None
        return Capture(image=image, seq=k, label=label)


