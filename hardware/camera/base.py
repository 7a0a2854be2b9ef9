"""The camera interface: one base class every camera backend implements.

Every frame is float32 linear intensity in [0, 1] with a sequence number (sensor frame count, so
gaps show drops), a capture timestamp and exposure/gain metadata. The base class validates each
frame; a camera that stalls, disappears or returns a malformed frame raises a CameraError subclass,
so a pipeline built on `read()` fails closed instead of passing anything on.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hardware.errors import CameraError, CameraFrameError


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
class Capture:
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
    def _capture(self, timeout: float) -> Capture: ...


