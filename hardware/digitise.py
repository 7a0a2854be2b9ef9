"""Key and digitise plain frames exactly as the device's sensor does, and what the model then gets.

The one helper for everything that needs the keyed ADC codes a device produces from plain frames
without running a device: canary frames, provisioning's calibration frames, benchmarks, attacks and
the SAN checks. The device itself keys frame by frame through the same PreADCStage.
"""
from __future__ import annotations

import numpy as np

from base.errors import ConfigError
from hardware.preadc import PreADCStage, SensorModel, dequantize


def key_and_digitise(sensor_key, frames: np.ndarray, model: SensorModel | None = None) -> np.ndarray:
    """Keyed ADC codes of plain float frames in [0, 1]: a batch (N, H, W), (N, H, W, C) or (N, D) vectors
    in the key's C, H, W order; same shape, uint8 up to 8 bits, else uint16.

    `model` defaults to the ideal 8-bit sensor (no noise, no optics); a noisy model's noise starts from
    its seed on every call. Raises KeyStageError for a key of another size or frames out of range.
    """
    return PreADCStage(sensor_key, model or SensorModel()).key_batch(np.asarray(frames))


def model_input(codes: np.ndarray, bits: int = 8) -> np.ndarray:
    """What the device feeds the model for ADC codes of `bits`: 8-bit codes as they are, any other depth
    rescaled to float32 [0, 1]."""
    return codes if bits == 8 else dequantize(codes, bits)


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
