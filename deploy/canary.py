"""Canary keyed frames for the on-device health check (host side, at provision/rotate time).

Plain test frames of the model's dataset are keyed with the device's sensor key, exactly as the
sensor would produce them; the keyed model is run on them on the host while the clear model is in
memory (tools.provisioning: the vault keeps only the sealed model), and frames whose (decrypted)
prediction equals the true label are kept with the class index the model outputs. They pair public
images with keyed frames, so bundles carry them sealed to the device too. The device must
then reproduce those outputs: a wrong key, a corrupted model or a broken runtime all fail it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from base.errors import ConfigError
from deploy.health import save_canary
from edge.runtime import TFLiteModel
from hardware.digitise import fit_to_input, key_and_digitise
from keys.fields import b64e

CANDIDATE_FACTOR = 4
CANARY_FRAMES = 16          # kept in the vault per generation (default of --canary-frames)


def key_frames(sensor_key, frames: np.ndarray) -> np.ndarray:
    """uint8 plain frames (N, H, W[, C]) -> uint8 keyed frames as the device's 8-bit sensor delivers them."""
    return key_and_digitise(sensor_key, np.asarray(frames).astype(np.float64) / 255.0)


PlainFrames = Callable[[str | None, int], tuple[np.ndarray, np.ndarray]]


def make_canary(model_bytes: bytes, keyset, plain_frames: PlainFrames, count: int = CANARY_FRAMES,
                dataset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (keyed uint8 frames, expected output class) for `count` frames the model gets right.

    `plain_frames(dataset, n)` gives n plain uint8 test frames and labels (host side:
    tools.datasets.plain_frames) of `dataset`, else of the dataset named in the model's metadata.
    """
    if count < 1:
        raise ConfigError("canary count must be at least 1")
    model = TFLiteModel(model_bytes)
    frames, labels = plain_frames(dataset or model.metadata.get("dataset"), count * CANDIDATE_FACTOR)
    shape = tuple(keyset.meta.get("input_shape") or ())
    if shape and int(np.prod(frames.shape[1:])) != int(np.prod(shape)):      # e.g. 28x28 frames, a 32x32x3 model
        frames = fit_to_input(frames, shape, "canary frames").reshape(len(frames), -1)
    keyed = key_frames(keyset.sensor, frames)
    outputs = model.predict(keyed)
    raw = np.argmax(outputs, axis=1)
    decoded = np.argmax(keyset.output.apply_inverse(outputs), axis=1) if keyset.output is not None else raw
    good = np.flatnonzero(decoded == labels)[:count]
    if len(good) < count:
        raise ConfigError(f"only {len(good)} of {len(frames)} candidate canary frames are classified "
                          f"correctly by the keyed model; need {count} (is the model keyed for this key set?)")
    return keyed[good], raw[good]


def vault_canary(model_bytes: bytes, keyset, plain_frames: PlainFrames, count: int = CANARY_FRAMES,
                 dataset: str | None = None) -> str:
    """Canary frames as the vault keeps them (`save_canary` .npz, base64)."""
    frames, expected = make_canary(model_bytes, keyset, plain_frames, count, dataset=dataset)
    return b64e(save_canary(frames, expected))
