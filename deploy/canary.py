"""Canary keyed frames for the on-device health check (host side, at provision/rotate time).

Plain test frames of the model's dataset are keyed with the device's sensor key, exactly as the
sensor would produce them; the keyed model is run on them on the host while the clear model is in
memory (keys.generations: the vault keeps only the sealed model), and frames whose (decrypted)
prediction equals the true label are kept with the class index the model outputs. They pair public
images with keyed frames, so bundles carry them sealed to the device too. The device must
then reproduce those outputs: a wrong key, a corrupted model or a broken runtime all fail it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.datasets import fit_to_input, load_dataset, load_samples
from edge.errors import ConfigError
from edge.runtime import TFLiteModel

CANDIDATE_FACTOR = 4


def adc(values: np.ndarray) -> np.ndarray:
    """The 8-bit ADC: intensities in [0, 1] to counts 0..255."""
    return np.clip(np.rint(np.asarray(values) * 255.0), 0, 255).astype(np.uint8)


def key_frames(sensor_key, frames: np.ndarray) -> np.ndarray:
    """uint8 plain frames (N, H, W) -> uint8 keyed frames: ADC(A0 x) per flattened frame."""
    frames = np.asarray(frames)
    flat = frames.reshape(len(frames), -1).astype(np.float64) / 255.0
    return adc(sensor_key.apply(flat)).reshape(frames.shape)


def plain_frames(dataset: str | None, count: int, source: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Plain uint8 test frames and labels: from an .npz (frames, labels), or the model's dataset."""
    if source is not None:
        try:
            with np.load(source, allow_pickle=False) as data:
                return data["frames"][:count], data["labels"][:count]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"canary source {source} must be an .npz with 'frames' and 'labels': {exc}") from exc
    if dataset in (None, "", "fashion", "fashion_mnist", "fashion-mnist"):
        return load_samples(limit=count)
    return load_dataset(dataset, "test", limit=count)


def make_canary(model_bytes: bytes, keyset, count: int = 16, source: Path | None = None,
                dataset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (keyed uint8 frames, expected output class) for `count` frames the model gets right.

    Plain frames come from `source` (.npz), else `dataset`, else the dataset named in the model's metadata.
    """
    if count < 1:
        raise ConfigError("canary count must be at least 1")
    model = TFLiteModel(model_bytes)
    frames, labels = plain_frames(dataset or model.metadata.get("dataset"), count * CANDIDATE_FACTOR, source)
    shape = tuple(keyset.meta.get("input_shape") or ())
    if shape and int(np.prod(frames.shape[1:])) != int(np.prod(shape)):      # e.g. 28x28 frames, a 32x32x3 model
        frames = fit_to_input(frames, shape, "canary frames").reshape(len(frames), -1)
    keyed = key_frames(keyset.sensor, frames).reshape((len(frames),) + tuple(frames.shape[1:]))
    outputs = model.predict(keyed)
    raw = np.argmax(outputs, axis=1)
    decoded = np.argmax(keyset.output.apply_inverse(outputs), axis=1) if keyset.output is not None else raw
    good = np.flatnonzero(decoded == labels)[:count]
    if len(good) < count:
        raise ConfigError(f"only {len(good)} of {len(frames)} candidate canary frames are classified "
                          f"correctly by the keyed model; need {count} (is the model keyed for this key set?)")
    return keyed[good], raw[good]
