"""Cameras: one interface, a Raspberry Pi camera (picamera2, raw linear data) and a replay camera.

Every frame is float32 linear intensity in [0, 1] with a sequence number (sensor frame count, so
gaps show drops), a capture timestamp and exposure/gain metadata. The base class validates each
frame; a camera that stalls, disappears or returns a malformed frame raises a CameraError subclass,
so a pipeline built on `read()` fails closed instead of passing anything on.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from base.errors import ConfigError
from hardware.errors import CameraDisconnected, CameraEndOfStream, CameraError, CameraFrameError, CameraTimeout

__all__ = ["Frame", "Camera", "ReplayCamera", "ReplayFaults", "Picamera2Camera", "make_camera", "camera_config",
           "CameraError", "CameraTimeout", "CameraDisconnected", "CameraFrameError", "CameraEndOfStream"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff")


@dataclass
class Frame:
    """One captured frame; `image` is float32 linear intensity in [0, 1], shape (H, W) or (H, W, C)."""

    seq: int
    timestamp: float
    image: np.ndarray
    exposure_us: int | None = None
    analog_gain: float | None = None
    label: int | None = None        # ground truth, known only for replayed datasets


@dataclass
class _Capture:
    """What a backend hands to Camera.read before validation."""

    image: np.ndarray
    seq: int
    exposure_us: int | None = None
    analog_gain: float | None = None
    label: int | None = None


class Camera(ABC):
    """Base class: open/close (or `with`), read(timeout) -> Frame, frame_shape, dropped."""

    def __init__(self) -> None:
        self._opened = False
        self._dropped = 0

    @property
    @abstractmethod
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of every frame's image."""

    @property
    def dropped(self) -> int:
        """Frames the sensor captured that were never delivered by read()."""
        return self._dropped

    def open(self) -> Camera:
        """Start streaming (idempotent)."""
        if not self._opened:
            self._open()
            self._opened = True
        return self

    def close(self) -> None:
        """Stop streaming and release the device (idempotent)."""
        if self._opened:
            self._opened = False
            self._close()

    def __enter__(self) -> Camera:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, timeout: float = 1.0) -> Frame:
        """Return the next frame, or raise CameraTimeout / CameraDisconnected / CameraFrameError."""
        if not self._opened:
            raise CameraError(f"{type(self).__name__} is not open: call open() or use it in a with block")
        if not timeout > 0:
            raise CameraError(f"read timeout must be > 0 seconds, got {timeout}")
        cap = self._capture(timeout)
        stamp = time.time()
        return Frame(seq=cap.seq, timestamp=stamp, image=self._validate(cap.image, cap.seq),
                     exposure_us=cap.exposure_us, analog_gain=cap.analog_gain, label=cap.label)

    def _validate(self, image: object, seq: int) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.float32:
            kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
            raise CameraFrameError(f"frame {seq}: expected a float32 image, got {kind}")
        if image.shape != self.frame_shape:
            raise CameraFrameError(f"frame {seq}: shape {image.shape} differs from the camera's {self.frame_shape}")
        lo, hi = float(image.min()), float(image.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise CameraFrameError(f"frame {seq}: intensities must lie in [0, 1], got [{lo}, {hi}]")
        return image

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _capture(self, timeout: float) -> _Capture: ...


# -- replay ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayFaults:
    """Faults a ReplayCamera can inject, counted in frames delivered since the last open()."""

    stall_after: int | None = None        # then read() times out
    disconnect_after: int | None = None   # then read() raises CameraDisconnected
    bad_frame_at: int | None = None       # this delivered frame has the wrong shape

    def __post_init__(self) -> None:
        for key in ("stall_after", "disconnect_after", "bad_frame_at"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"{key} must be a non-negative integer, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict, where: str = "camera.faults") -> ReplayFaults:
        """Build from a config mapping: unknown keys and wrong types are a ConfigError."""
        from edge.config import parse_section
        return parse_section(data, cls, where)


@dataclass(frozen=True)
class ReplayConfig:
    """The `camera` section of a replay camera (see ReplayCamera)."""

    type: str
    source: str                           # folder, .npz, IDX file or 'samples'
    fps: float | None = None
    loop: bool = True
    limit: int | None = None
    faults: ReplayFaults | None = None

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise ConfigError(f"replay fps must be > 0 (or null for as fast as possible), got {self.fps}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"replay limit must be >= 1, got {self.limit}")


@dataclass(frozen=True)
class Picamera2Config:
    """The `camera` section of the Raspberry Pi camera (see Picamera2Camera)."""

    type: str
    index: int = 0
    size: list = field(default_factory=lambda: [28, 28])    # [width, height] of the output frames
    exposure_us: int | None = None
    analog_gain: float | None = None
    buffer_count: int = 4

    def __post_init__(self) -> None:
        if len(self.size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                          for v in self.size):
            raise ConfigError(f"size must be [width, height] integers >= 1, got {self.size!r}")
        if self.index < 0 or not 1 <= self.buffer_count <= 32:
            raise ConfigError(f"index must be >= 0 and buffer_count 1..32, got {self.index}, {self.buffer_count}")
        if (self.exposure_us is not None and self.exposure_us <= 0) or \
                (self.analog_gain is not None and self.analog_gain <= 0):
            raise ConfigError("exposure_us and analog_gain must be > 0 when given")


CAMERA_TYPES = {"replay": ReplayConfig, "picamera2": Picamera2Config}


def camera_config(data: object, where: str = "camera") -> ReplayConfig | Picamera2Config:
    """Validate a device config's camera section (type defaults to replay) with edge.config's checker:
    unknown keys, wrong types and out-of-range values are one ConfigError naming the key."""
    from edge.config import parse_section
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    kind = data.get("type", "replay")
    if kind not in CAMERA_TYPES:
        raise ConfigError(f"{where}.type: unknown camera type {kind!r}; choose one of {', '.join(sorted(CAMERA_TYPES))}")
    return parse_section({**data, "type": kind}, CAMERA_TYPES[kind], where)


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
    from edge.datasets import load_samples, read_idx

    labels = None
    if isinstance(source, np.ndarray):
        images = to_linear_float(source, "replay array")
    elif str(source) == "samples":
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

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def _open(self) -> None:
        self._next, self._delivered, self._dropped = 0, 0, 0
        self._t0 = time.monotonic()

    def _close(self) -> None:
        pass

    def _capture(self, timeout: float) -> _Capture:
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
        return _Capture(image=image, seq=k, label=label)


# -- Raspberry Pi camera --------------------------------------------------------------------------
def box_downsample(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Area-average a 2-D image to out_hw (linear, so it commutes with linear intensity)."""
    h, w = image.shape
    oh, ow = out_hw
    if oh > h or ow > w:
        raise CameraError(f"cannot downsample {h}x{w} to a larger {oh}x{ow}")
    rows = np.linspace(0, h, oh + 1).astype(int)
    cols = np.linspace(0, w, ow + 1).astype(int)
    summed = np.add.reduceat(np.add.reduceat(image, rows[:-1], axis=0), cols[:-1], axis=1)
    return summed / np.outer(np.diff(rows), np.diff(cols))


class Picamera2Camera(Camera):
    """The Raspberry Pi camera through picamera2, read as raw Bayer data and linearised.

    The smallest sensor mode covering twice the output size is streamed unpacked; each frame is
    black-level corrected, scaled to [0, 1], binned 2x2 (RGGB -> luminance) and area-averaged to
    `size` (width, height). All of that is linear, so keys act on linear intensity before any 8-bit
    conversion. picamera2 needs Raspberry Pi OS's libcamera: make the venv with --system-site-packages.
    """

    def __init__(self, index: int = 0, size: tuple[int, int] = (28, 28), exposure_us: int | None = None,
                 analog_gain: float | None = None, buffer_count: int = 4):
        super().__init__()
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"camera size must be [width, height] >= 1, got {size}")
        self.index, self.size = index, (int(size[0]), int(size[1]))
        self.exposure_us, self.analog_gain, self.buffer_count = exposure_us, analog_gain, buffer_count
        self._cam = None
        self._mode: dict = {}
        self._last_ts: int | None = None
        self._seq = -1

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (self.size[1], self.size[0])

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(f"picamera2 is not available ({exc}). On Raspberry Pi OS: sudo apt install "
                              "python3-picamera2 and create the venv with --system-site-packages; "
                              "elsewhere use a replay camera") from exc
        try:
            cam = Picamera2(self.index)
            self._mode = self.pick_mode(cam.sensor_modes, self.size)
            controls = {k: v for k, v in (("ExposureTime", self.exposure_us),
                                          ("AnalogueGain", self.analog_gain)) if v is not None}
            config = cam.create_video_configuration(
                raw={"size": tuple(self._mode["size"]), "format": str(self._mode["unpacked"])},
                buffer_count=self.buffer_count, controls=controls)
            cam.configure(config)
            cam.start()
        except CameraError:
            raise
        except Exception as exc:
            raise CameraError(f"cannot start Raspberry Pi camera {self.index}: {exc}") from exc
        self._cam, self._last_ts, self._seq = cam, None, -1

    def _close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()

    @staticmethod
    def pick_mode(modes: list[dict], size: tuple[int, int]) -> dict:
        """The smallest-area raw sensor mode at least 2x the output size in both axes."""
        fitting = [m for m in modes if m["size"][0] >= 2 * size[0] and m["size"][1] >= 2 * size[1]]
        if not fitting:
            raise CameraError(f"no sensor mode covers twice the output size {size}: "
                              f"{[tuple(m['size']) for m in modes]}")
        return min(fitting, key=lambda m: m["size"][0] * m["size"][1])

    def _capture(self, timeout: float) -> _Capture:
        try:
            request = self._cam.capture_request(wait=timeout)
        except TimeoutError as exc:
            raise CameraTimeout(f"Raspberry Pi camera {self.index} delivered no frame within {timeout}s") from exc
        except Exception as exc:
            self._opened = False
            raise CameraDisconnected(f"Raspberry Pi camera {self.index} failed mid-stream: {exc}") from exc
        try:
            raw = request.make_array("raw")
            meta = request.get_metadata()
        finally:
            request.release()
        self._count_drops(meta)
        return _Capture(image=self.linearise(raw, meta), seq=self._seq,
                        exposure_us=meta.get("ExposureTime"), analog_gain=meta.get("AnalogueGain"))

    def _count_drops(self, meta: dict) -> None:
        ts, duration_us = meta.get("SensorTimestamp"), meta.get("FrameDuration")
        missed = 0
        if ts is not None and self._last_ts is not None and duration_us:
            missed = max(0, round((ts - self._last_ts) / (duration_us * 1000.0)) - 1)
        self._last_ts = ts
        self._dropped += missed
        self._seq += 1 + missed

    def linearise(self, raw: np.ndarray, meta: dict) -> np.ndarray:
        """Unpacked raw Bayer buffer (uint8 bytes of uint16 samples) -> float32 linear (H, W) in [0, 1]."""
        width, height = self._mode["size"]
        depth = int(self._mode["bit_depth"])
        samples = np.ascontiguousarray(raw).view(np.uint16)[:height, :width].astype(np.float32)
        black = float(meta.get("SensorBlackLevels", (0,))[0]) / 2 ** (16 - depth)
        white = float(2 ** depth - 1)
        linear = np.clip((samples - black) / (white - black), 0.0, 1.0)
        h2, w2 = (height // 2) * 2, (width // 2) * 2
        quads = linear[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).mean(axis=(1, 3))
        return box_downsample(quads, self.frame_shape).astype(np.float32)


# -- factory --------------------------------------------------------------------------------------
def make_camera(config: dict) -> Camera:
    """Build a camera from a device-config mapping, e.g. {'type': 'replay', 'source': 'samples'}."""
    cfg = camera_config(config)
    if isinstance(cfg, ReplayConfig):
        return ReplayCamera(cfg.source, fps=cfg.fps, loop=cfg.loop, limit=cfg.limit, faults=cfg.faults)
    return Picamera2Camera(index=cfg.index, size=tuple(cfg.size), exposure_us=cfg.exposure_us,
                           analog_gain=cfg.analog_gain, buffer_count=cfg.buffer_count)
