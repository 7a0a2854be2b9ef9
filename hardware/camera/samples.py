"""The shipped sample frames: ~500 Fashion-MNIST test frames (MIT licence) for the demo, the replay
camera (source 'samples') and deploy health checks. Research datasets are never shipped (tools.datasets)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from base.errors import ConfigError

SAMPLES = "samples"                                   # the replay source name of these frames
SAMPLES_FILE = Path(__file__).resolve().parent / "data" / "fashion_samples.npz"


def load_samples(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return the shipped Fashion-MNIST sample frames (uint8 (N, 28, 28)) and labels."""
    if not SAMPLES_FILE.is_file():
        raise ConfigError(f"shipped sample frames are missing: {SAMPLES_FILE}")
    with np.load(SAMPLES_FILE, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    return (images[:limit], labels[:limit]) if limit is not None else (images, labels)
