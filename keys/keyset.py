"""A device key set: every key for one device and one model, derived from one 256-bit secret."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from base.atomic import atomic_write
from keys.container import KeyFileError, fingerprint, pack, unpack
from keys.factors import Key

KEYSET_MAGIC = b"KCAMKSET"

__all__ = ["KeySet", "KeyFileError"]


@dataclass
class KeySet:
    """Sensor key A0, one key per keyed layer output, and the optional output (logit) key."""
    device_id: str
    model_id: str
    profile: str
    sensor: Key
    layers: list[Key] = field(default_factory=list)
    output: Key | None = None
    meta: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Canonical, versioned serialisation (no pickle)."""
        keys = {"sensor": self.sensor.to_bytes()}
        keys.update({f"layer.{i:03d}": k.to_bytes() for i, k in enumerate(self.layers)})
        if self.output is not None:
            keys["output"] = self.output.to_bytes()
        header = {"device_id": self.device_id, "model_id": self.model_id, "profile": self.profile,
                  "layers": len(self.layers), "output": self.output is not None, "meta": self.meta}
        return pack(KEYSET_MAGIC, header, {k: np.frombuffer(v, dtype=np.uint8) for k, v in keys.items()})

    @classmethod
    def from_bytes(cls, blob: bytes, what: str = "key set file") -> KeySet:
        """Parse `to_bytes` output; corrupted or truncated input raises KeyFileError."""
        header, arrays = unpack(KEYSET_MAGIC, blob, what)
        try:
            key = lambda name: Key.from_bytes(arrays[name].tobytes(), f"{what} ({name})")  # noqa: E731
            layers = [key(f"layer.{i:03d}") for i in range(int(header["layers"]))]
            return cls(header["device_id"], header["model_id"], header["profile"], key("sensor"), layers,
                       key("output") if header["output"] else None, header.get("meta", {}))
        except KeyError as exc:
            raise KeyFileError(f"{what} lacks entry {exc}") from exc

    def save(self, path: str | Path) -> None:
        """Write the key set with mode 0600, atomically."""
        atomic_write(path, self.to_bytes(), 0o600)

    @classmethod
    def load(cls, path: str | Path) -> KeySet:
        path = Path(path)
        if not path.is_file():
            raise KeyFileError(f"key set file not found: {path}")
        return cls.from_bytes(path.read_bytes(), f"key set file {path}")

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the canonical form."""
        return fingerprint(self.to_bytes())

    @property
    def sensor_fingerprint(self) -> str:
        return self.sensor.fingerprint
