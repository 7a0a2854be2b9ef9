"""Reading a device's key material (keyed model, sensor key, canary) into memory only.

A device config with `identity:` (every config that provisioning writes) makes every such file
mandatory sealed: it is opened with the device's private key from the identity's key store and
the clear bytes never touch the disk. A config without `identity:` (the public demo device in
examples/sim-device, research runs) reads clear files, and a sealed file then is an error that
says so. Device side: imports no deploy/ and no tools/.
"""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from base.errors import ConfigError
from keys.sealing import SealedFileError, context_for, is_sealed, unseal


class DeviceFiles:
    """Opens one device's key-material files; the private key is fetched once from its key store."""

    def __init__(self, device_id: str, identity_dir: str | Path | None):
        self.device_id = device_id
        self.identity_dir = Path(identity_dir) if identity_dir is not None else None
        self._key: X25519PrivateKey | None = None

    @property
    def sealed(self) -> bool:
        """Whether files must be sealed (an identity is configured)."""
        return self.identity_dir is not None

    def private_key(self) -> X25519PrivateKey:
        if self.identity_dir is None:
            raise ConfigError("no device identity is configured (identity: in the device config)")
        if self._key is None:
            from keys.keystore import open_store
            self._key = open_store(self.identity_dir).private_key()
        return self._key

    def open(self, blob: bytes, role: str, what: str) -> bytes:
        """The clear content of `blob` (a file's bytes) of `role`, checked against the sealing policy."""
        if self.identity_dir is None:
            if is_sealed(blob):
                raise SealedFileError(f"{what} is sealed to a device, but the config names no identity: "
                                      "add `identity: PATH` (the device's identity folder) to the config")
            return blob
        return unseal(self.private_key(), blob, context_for(self.device_id, role), what)

    def read(self, path: str | Path, role: str) -> bytes:
        """Read and open one file (FileNotFoundError passes through: a missing file is its own alarm)."""
        path = Path(path)
        return self.open(path.read_bytes(), role, str(path))
