"""Key and digitise plain frames exactly as the device's sensor does, and what the model then gets.

The one helper for everything that needs the keyed ADC codes a device produces from plain frames
without running a device: canary frames, provisioning's calibration frames, benchmarks, attacks and
the SAN checks. The device itself keys frame by frame through the same PreADCStage.
"""
from __future__ import annotations

import numpy as np

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
