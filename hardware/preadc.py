"""Simulated pre-ADC sensor stage: the optical key A0 applied in the analog domain, then noise and ADC.

Signal chain for one frame x (float linear intensity in [0, 1], fraction of full well):
    optional fiber-bundle optics  ->  sensor key A0 (mixing, permutation, gain, bias)
    ->  shot noise (Poisson on x * full_well electrons)  ->  dark offset  ->  read noise
    ->  analog gain  ->  ADC (clip to full scale 1.0, round to `bits`).
The lead's key generator normalises A0 so [0, 1] maps into [0, 1]: the ADC never clips a clean
frame. In hardware each factor is light transport before the ADC: the mixing (non-negative rows summing
to 1) a faceplate whose output fibres each collect light from several scattered input positions (fused
fan-in couplers) or a coded amplitude mask; the permutation the fibres' routing; the gains per-fibre ND
attenuation; the bias stray light / dark offset. The raw frame and every analog intermediate stay local to
__call__; only ADC codes leave.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from base.errors import ConfigError
from base.schema import POSITIVE, Rule, Section, setting
from hardware.errors import KeyStageError
from hardware.optics import FiberOptics

__all__ = ["SensorModel", "PreADCStage", "KeyStageError", "adc", "quantise", "dequantize", "FiberOptics"]


def quantise(values: np.ndarray, bits: int = 8) -> np.ndarray:
    """Values in [0, 1] to codes: round(clip(values, 0, 1) * (2**bits - 1)), computed in the values' own
    float precision (float32 model outputs stay float32). Returns uint8 for bits <= 8, uint16 for 9..16 bits."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ConfigError(f"ADC bits must be an integer in 1..16, got {bits!r}")
    levels = (1 << int(bits)) - 1
    return np.rint(np.clip(values, 0.0, 1.0) * levels).astype(np.uint8 if bits <= 8 else np.uint16)


def adc(values: np.ndarray, bits: int = 8, gain: float = 1.0, full_scale: float = 1.0) -> np.ndarray:
    """The sensor's ADC on analog values (in float64): code = quantise(values * gain / full_scale, bits)."""
    if not gain > 0 or not full_scale > 0:
        raise ConfigError(f"ADC gain and full scale must be > 0, got gain={gain}, full_scale={full_scale}")
    return quantise(np.asarray(values, dtype=np.float64) * (gain / full_scale), bits)


def dequantize(codes: np.ndarray, bits: int) -> np.ndarray:
    """ADC codes back to float32 in [0, 1] (for feeding >8-bit frames to a float-input model)."""
    return (np.asarray(codes, dtype=np.float32) / np.float32((1 << int(bits)) - 1)).astype(np.float32)


@dataclass
class SensorModel(Section):
    """Noise and ADC parameters. Signal levels are fractions of ADC full scale (1.0 = full well).

    read_noise: RMS Gaussian read noise as a fraction of full scale (1 LSB at 8 bits = 1/255 ~ 0.0039);
        multiply by full_well for electrons (e.g. 0.0005 * 10000 e- = 5 e- RMS).
    shot_noise: draw Poisson photo-electrons from x * full_well.
    full_well: electrons at full scale (only used by shot noise).
    dark_offset: mean dark signal added before the ADC, fraction of full scale (not subtracted: it is a
        systematic error the keyed model sees).
    bits, adc_gain: ADC resolution and the analog gain in front of it (clipping above full scale).
    seed: seeds the noise generator; the same seed and frame sequence give identical output.
    optics: optional FiberOptics applied before the key (or after it, with optics_after_key).
    """

    read_noise: float = setting(0.0, rule=Rule(lambda v: v >= 0, "must be >= 0 (fraction of full scale)"))
    shot_noise: bool = False
    full_well: float = setting(10000.0, rule=Rule(lambda v: v > 0, "must be > 0 electrons"))
    dark_offset: float = setting(0.0, rule=Rule(lambda v: 0 <= v < 1, "must be in [0, 1) of full scale"))
    bits: int = setting(8, rule=Rule(lambda v: isinstance(v, int) and 1 <= v <= 16, "must be an integer in 1..16"))
    adc_gain: float = setting(1.0, rule=POSITIVE)
    seed: int = 0
    optics: FiberOptics | None = None
    optics_after_key: bool = False


@dataclass
class PreADCStage:
    """Keys linear frames before the simulated ADC: PreADCStage(key, model)(image) -> ADC codes."""

    sensor_key: object | None
    model: SensorModel = field(default_factory=SensorModel)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.model.seed)
        self._optics: dict[tuple[int, int], object] = {}

    def reset(self) -> None:
        """Restart the noise sequence from the model's seed."""
        self._rng = np.random.default_rng(self.model.seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Key one frame (float (H, W) or (H, W, C) in [0, 1]); returns uint8/uint16 codes, same shape."""
        x = self._check(image, "frame", (2, 3))
        return self._digitise(x[None])[0]

    def key_batch(self, frames: np.ndarray) -> np.ndarray:
        """Key a batch of frames as __call__ keys each: float (N, H, W), (N, H, W, C), or (N, D) vectors
        already in the key's C, H, W order, in [0, 1]; returns uint8/uint16 codes, same shape."""
        return self._digitise(self._check(frames, "batch", (2, 3, 4)))

    def _digitise(self, frames: np.ndarray) -> np.ndarray:
        """Frames with a leading batch axis -> codes: optics, key, noise and ADC on each frame's key-order vector."""
        key = self.sensor_key
        if key is None:
            raise KeyStageError("no sensor key is loaded: refusing to digitise an unkeyed frame")
        vectors, channels = _to_key_order(frames)
        if key.size != vectors.shape[1]:
            raise KeyStageError(f"sensor key is for frames of {key.size} values but the frame {frames.shape[1:]} has "
                                f"{vectors.shape[1]}: the key does not belong to this camera configuration")
        vec = (vectors[0] if len(vectors) == 1 else vectors).astype(np.float64)   # one frame keys as a vector
        optics = None
        if self.model.optics:
            if frames.ndim == 2:
                raise KeyStageError("the optics model needs frames (N, H, W[, C]), not flat vectors")
            optics = self._optics_matrix(frames.shape[1:3], channels)
        if optics is not None and not self.model.optics_after_key:
            vec = _sparse_apply(optics, vec)
        vec = np.asarray(key.apply(vec), dtype=np.float64)
        if optics is not None and self.model.optics_after_key:
            vec = _sparse_apply(optics, vec)
        codes = adc(self._noise(vec), self.model.bits, self.model.adc_gain)
        return _from_key_order(codes.reshape(vectors.shape), frames.shape)

    def _check(self, frames: np.ndarray, what: str, ndims: tuple[int, ...]) -> np.ndarray:
        if not isinstance(frames, np.ndarray) or not np.issubdtype(frames.dtype, np.floating):
            kind = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
            raise KeyStageError(f"the pre-ADC stage takes float linear intensities, got {kind}")
        if frames.ndim not in ndims or frames.size == 0:
            shapes = {2: "(H, W)", 3: "(H, W, C)"} if what == "frame" else {2: "(N, D)", 3: "(N, H, W)", 4: "(N, H, W, C)"}
            raise KeyStageError(f"{what} must have shape {' or '.join(shapes[n] for n in ndims)}, got {frames.shape}")
        lo, hi = float(frames.min()), float(frames.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
            raise KeyStageError(f"frame intensities must lie in [0, 1], got [{lo}, {hi}]")
        return frames

    def _optics_matrix(self, hw: tuple[int, int], channels: int):
        import scipy.sparse as sp

        if hw not in self._optics:
            self._optics[hw] = self.model.optics.matrix(hw)
        m = self._optics[hw]
        return m if channels == 1 else sp.block_diag([m] * channels, format="csr")

    def _noise(self, signal: np.ndarray) -> np.ndarray:
        m, rng = self.model, self._rng
        if m.shot_noise:
            signal = rng.poisson(np.clip(signal, 0.0, None) * m.full_well) / m.full_well
        if m.dark_offset:
            signal = signal + m.dark_offset
        if m.read_noise:
            signal = signal + rng.normal(0.0, m.read_noise, signal.shape)
        return signal


def _to_key_order(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """Frames (N, H, W[, C]) -> (N, C*H*W) vectors in the key's C, H, W order, and C; (N, D) stays as it is."""
    if frames.ndim == 2:
        return frames, 1
    n, h, w = frames.shape[:3]
    chw = frames.reshape(n, h, w, -1).transpose(0, 3, 1, 2)
    return chw.reshape(n, -1), chw.shape[1]


def _from_key_order(vectors: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of _to_key_order: (N, C*H*W) vectors back to frames of `shape`."""
    if len(shape) == 2:
        return vectors
    n, h, w = shape[:3]
    return vectors.reshape(n, -1, h, w).transpose(0, 2, 3, 1).reshape(shape)


def _sparse_apply(matrix, vec: np.ndarray) -> np.ndarray:
    """A sparse operator on one vector (D,) or on each row of (N, D)."""
    return matrix @ vec if vec.ndim == 1 else (matrix @ vec.T).T
