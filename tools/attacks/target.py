"""The victim of an attack: a device's keyed model and keyed frames, built from a shipped base model."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from base.errors import KeycamError
from hardware.digitise import key_and_digitise
from hardware.preadc import SensorModel
from keys.keyset import KeySet
from tools.bench.keyed import SHIPPED_MODELS, shipped_model
from tools.datasets import load_dataset
from tools.ir import Network, forward
from tools.keying.keyed import derive_keyset, key_network
from tools.keying.provision import build_keyed_model
from tools.onnx_import import load_onnx

CALIBRATION_FRAMES = 200


class AttackError(KeycamError):
    """An attack cannot run on this input (unsupported model structure, too few frames, ...)."""


@dataclass
class Target:
    """Everything an attack may be given; each attack documents which parts it uses."""
    dataset: str
    profile: str
    net: Network               # the plain float network (ground truth, and the fine-tuning attack's architecture)
    keyset: KeySet             # the victim's keys (ground truth for scoring only)
    keyed_net: Network         # the keyed float network (what an attacker extracts from the .tflite)
    tflite_int8: bytes         # the deployed keyed model
    plain: np.ndarray          # (N, H*W) plain test frames in [0, 1]
    labels: np.ndarray
    train_plain: np.ndarray    # (M, H*W) plain frames the attacker may own (training split)
    train_labels: np.ndarray
    other: KeySet              # another device's key set (same model, same profile)

    @property
    def shape(self) -> tuple[int, int]:
        c, h, w = self.net.input_shape
        if c != 1:
            raise AttackError("the attacks handle single-channel frames only")
        return int(h), int(w)

    def recognised(self, recon: np.ndarray, labels: np.ndarray | None = None) -> float:
        """Fraction of reconstructed frames the plain model still classifies correctly (chance = 1/classes);
        labels default to the first test labels (frames reconstructed from the test split in order)."""
        recon = np.clip(np.asarray(recon, dtype=np.float64), 0.0, 1.0)
        labels = self.labels if labels is None else labels
        if len(labels) < len(recon):
            labels = self.test_frames(len(recon))[1]
        return float(np.mean(forward(self.net, recon).argmax(1) == labels[:len(recon)]))

    def test_frames(self, n: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The first n plain test frames in [0, 1] and their labels (None: the whole split); loads more of
        the split than `plain` holds when needed."""
        return _split_frames(self.dataset, "test", n)

    def train_frames(self, n: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The first n plain training frames in [0, 1] (the attacker's public images) and their labels."""
        return _split_frames(self.dataset, "train", n)

    def keyed(self, frames: np.ndarray, keyset: KeySet | None = None, noise: float = 0.0,
              seed: int = 0) -> np.ndarray:
        """Keyed uint8 frames as the sensor delivers them (optionally with Gaussian read noise before the ADC)."""
        key = (keyset or self.keyset).sensor
        return key_and_digitise(key, np.asarray(frames, dtype=np.float64), SensorModel(read_noise=noise, seed=seed))


@lru_cache(maxsize=4)
def _split(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_dataset(dataset, split)
    return images.reshape(len(images), -1), labels


def _split_frames(dataset: str, split: str, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _split(dataset, split)
    if n is not None and n > len(images):
        raise AttackError(f"{n} {split} frames asked, the {dataset} {split} split has {len(images)}")
    return images[:n] / 255.0, labels[:n]


def _secret(label: str) -> bytes:
    return hashlib.sha256(f"keycam-attack/{label}".encode()).digest()


def build_target(dataset: str, profile: str, limit: int | None = 500, train_limit: int = 3000,
                 model_path: str | None = None, seed: str = "victim") -> Target:
    """Provision a keyed model for `profile` and load test/train frames."""
    if dataset not in SHIPPED_MODELS:
        raise AttackError(f"unknown dataset {dataset!r}; choose one of: {', '.join(sorted(SHIPPED_MODELS))}")
    path = model_path or shipped_model(dataset)
    images, labels = load_dataset(dataset, "test", limit=limit)
    train, train_labels = load_dataset(dataset, "train", limit=train_limit)
    plain = images.reshape(len(images), -1) / 255.0
    train_plain = train.reshape(len(train), -1) / 255.0
    net = load_onnx(path)
    calib = train_plain[:CALIBRATION_FRAMES]
    prov = build_keyed_model(path, _secret(seed), f"{seed}-device", profile, calib_frames=calib, float_model=False)
    keyset, blob = prov.keyset, prov.tflite_int8
    other = derive_keyset(_secret(seed + "/other"), f"{seed}-other-device", keyset.model_id, net, profile)
    return Target(dataset, profile, net, keyset, key_network(net, keyset), blob, plain, labels, train_plain,
                  train_labels, other)
