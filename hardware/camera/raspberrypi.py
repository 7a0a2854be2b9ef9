"""The Raspberry Pi camera through picamera2: raw Bayer data, linearised (type `picamera2`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from base.errors import ConfigError
from base.schema import POSITIVE, Rule, Section, between, setting
from hardware.camera.base import Camera, Capture
from hardware.errors import CameraDisconnected, CameraError, CameraTimeout


@dataclass(frozen=True)
class Picamera2Config(Section):
    """The `camera` section of the Raspberry Pi camera (see Picamera2Camera)."""

    type: str
    index: int = setting(0, rule=Rule(lambda v: v >= 0, "must be >= 0"))
    size: list[int] = setting(default_factory=lambda: [28, 28],        # [width, height] of the output frames
                              rule=Rule(lambda v: len(v) == 2 and min(v) >= 1, "must be [width, height] >= 1"))
    exposure_us: int | None = setting(None, rule=POSITIVE)
    analog_gain: float | None = setting(None, rule=POSITIVE)
    buffer_count: int = setting(4, rule=between(1, 32))


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

    @classmethod
    def from_config(cls, cfg: Picamera2Config) -> Picamera2Camera:
        """The camera a validated `camera:` section of type picamera2 describes."""
        return cls(index=cfg.index, size=tuple(cfg.size), exposure_us=cfg.exposure_us,
                   analog_gain=cfg.analog_gain, buffer_count=cfg.buffer_count)

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

    def _capture(self, timeout: float) -> Capture:
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
        return Capture(image=self.linearise(raw, meta), seq=self._seq,
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


