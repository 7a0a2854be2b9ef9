"""Where a device keeps its X25519 private key (the secret that opens every sealed file on the device).

A device's identity folder holds `keystore.json`, naming the store and its parameters:
    {"store": "file"}                      identity/device.key, raw 32 bytes, mode 0600 (the default)
    {"store": "tpm2", ...}                 the key sealed to the device's TPM 2.0 (keys.tpm2_store)
The private key is only ever returned into memory (`private_key()`); no store writes it in clear
anywhere but the file store's own 0600 file.
"""
from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from base.atomic import atomic_write
from base.errors import ConfigError

STORE_FILE = "keystore.json"
KEY_FILE = "device.key"


class DeviceKeyStore(ABC):
    """One way of keeping the device's X25519 private key at rest."""
    name: ClassVar[str]

    def __init__(self, identity_dir: Path):
        self.identity_dir = Path(identity_dir)

    @classmethod
    @abstractmethod
    def create(cls, identity_dir: Path, raw_private: bytes, **options) -> DeviceKeyStore:
        """Store `raw_private` (32 bytes) in this store under `identity_dir`; record it in keystore.json."""

    @classmethod
    def problem(cls, **options) -> str | None:
        """Why this store cannot be used here with `options`, as one actionable line (None: it can)."""
        return None

    @classmethod
    @abstractmethod
    def open(cls, identity_dir: Path, meta: dict) -> DeviceKeyStore:
        """The store described by `meta` (the parsed keystore.json)."""

    @abstractmethod
    def private_bytes(self) -> bytes:
        """The raw 32-byte private key, into memory only."""

    def metadata(self) -> dict:
        """What keystore.json records for this store (subclasses add their parameters)."""
        return {"store": self.name}

    def private_key(self) -> X25519PrivateKey:
        raw = self.private_bytes()
        try:
            return X25519PrivateKey.from_private_bytes(raw)
        except ValueError as exc:
            raise ConfigError(f"the {self.name} key store in {self.identity_dir} returned a malformed key") from exc

    def _record(self) -> None:
        atomic_write(self.identity_dir / STORE_FILE, json.dumps(self.metadata(), sort_keys=True).encode(), 0o644)


class FileKeyStore(DeviceKeyStore):
    """The key as a raw 0600 file, identity/device.key."""
    name = "file"

    @classmethod
    def create(cls, identity_dir: Path, raw_private: bytes, **options) -> FileKeyStore:
        if options:
            raise ConfigError(f"the file key store takes no options (got {', '.join(sorted(options))})")
        store = cls(identity_dir)
        store.identity_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(store.identity_dir / KEY_FILE, raw_private, 0o600)
        store._record()
        return store

    @classmethod
    def open(cls, identity_dir: Path, meta: dict) -> FileKeyStore:
        return cls(identity_dir)

    def private_bytes(self) -> bytes:
        path = self.identity_dir / KEY_FILE
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(f"device key {path} is missing") from exc


# name -> "module:Class"; imported on use, so a device without TPM software never loads the TPM store
STORES: dict[str, str] = {"file": "keys.keystore:FileKeyStore", "tpm2": "keys.tpm2_store:Tpm2KeyStore"}


def store_class(name: str) -> type[DeviceKeyStore]:
    """The key-store class registered under `name` (a clear error for unknown names)."""
    if name not in STORES:
        raise ConfigError(f"unknown device key store {name!r}; choose one of: {', '.join(sorted(STORES))}")
    module, cls = STORES[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the {name} device key store is not available here: module {exc.name!r} is "
                          "missing (install it, or use the file store)") from exc


def key_present(identity_dir: Path) -> bool:
    """Whether `identity_dir` already holds a device key (any store)."""
    identity_dir = Path(identity_dir)
    return (identity_dir / STORE_FILE).exists() or (identity_dir / KEY_FILE).exists()


def open_store(identity_dir: Path) -> DeviceKeyStore:
    """The device's key store as keystore.json names it (no keystore.json: the file store)."""
    identity_dir = Path(identity_dir)
    path = identity_dir / STORE_FILE
    if not path.exists():
        return FileKeyStore(identity_dir)
    try:
        meta = json.loads(path.read_text())
        name = meta["store"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is corrupted: {exc}") from exc
    return store_class(name).open(identity_dir, meta)
