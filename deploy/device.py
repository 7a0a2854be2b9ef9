"""The on-device layout the agent manages (device side: imports nothing from tools/).

    ROOT/identity/device.json   {"device_id", "hardware"}
    ROOT/identity/keystore.json which key store keeps the device's X25519 private key (keys.keystore);
    ROOT/identity/device.key    absent: the file store, device.key (raw, 0600). That key opens the
                                sealed model, sensor key and canary: they stay sealed on disk
    ROOT/identity/signing.pub   the trusted Ed25519 bundle-signing public key (base64)
    ROOT/agent.yaml             optional: service restart / is-active commands, health timeout
    ROOT/slots/a, ROOT/slots/b  the two A/B slots, files as the bundle carried them (key material sealed);
                                slots/X/device.yaml says `identity: ../../identity`
    ROOT/slots/current -> X     relative symlink, replaced atomically (rename) to switch slots; the
                                service runs `keycam run --config ROOT/slots/current/device.yaml`
    ROOT/state.json             committed slot, its version, anti-rollback floor, an install in flight
    ROOT/incoming/              uploads land here before they are verified
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from base.atomic import atomic_write, fsync_dir
from base.errors import ConfigError
from base.ids import check_id
from base.signing import decode_public, encode_public, raw_private, raw_public
from deploy.manifest import BundleError, check_device_id
from keys.keystore import key_present, open_store, store_class

SLOTS = ("a", "b")
_TIMEOUT_MAX = 3600


def tree_digest(path: Path) -> str | None:
    """SHA-256 over every file's relative path, mode and content under `path` (None if absent)."""
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        h.update(f"{rel}\0{p.lstat().st_mode:o}\0".encode())
        if p.is_file() and not p.is_symlink():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@dataclass
class ServiceConfig:
    """How the agent restarts the device service and asks whether it is up (argv lists)."""
    restart: list[str] | None = None
    is_active: list[str] | None = None
    start_timeout_s: float = 10.0
    health_timeout_s: float = 30.0


def _argv(value, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = ["/bin/sh", "-c", value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a command line string or a non-empty list of strings")
    return value


def _seconds(value, where: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= _TIMEOUT_MAX:
        raise ConfigError(f"{where} must be a number of seconds in (0, {_TIMEOUT_MAX}]")
    return float(value)


def load_service_config(path: Path) -> ServiceConfig:
    """Parse and validate agent.yaml; absent file = no service (first flash onto an SD card)."""
    if not path.exists():
        return ServiceConfig()
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable YAML: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) - {"service", "health"}:
        raise ConfigError(f"{path}: top-level keys must be 'service' and/or 'health'")
    svc, health = doc.get("service") or {}, doc.get("health") or {}
    if not isinstance(svc, dict) or set(svc) - {"restart", "is_active", "start_timeout_s"}:
        raise ConfigError(f"{path}: 'service' takes restart, is_active, start_timeout_s")
    if not isinstance(health, dict) or set(health) - {"timeout_s"}:
        raise ConfigError(f"{path}: 'health' takes timeout_s")
    cfg = ServiceConfig(_argv(svc.get("restart"), f"{path}: service.restart"),
                        _argv(svc.get("is_active"), f"{path}: service.is_active"),
                        _seconds(svc.get("start_timeout_s"), f"{path}: service.start_timeout_s", 10.0),
                        _seconds(health.get("timeout_s"), f"{path}: health.timeout_s", 30.0))
    if (cfg.restart is None) != (cfg.is_active is None):
        raise ConfigError(f"{path}: service needs both 'restart' and 'is_active' commands")
    return cfg


class DeviceRoot:
    """Paths, identity and state of one device root directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.identity_dir = self.root / "identity"
        self.state_path = self.root / "state.json"
        self.current = self.root / "slots" / "current"
        self.incoming = self.root / "incoming"
        self.lock_path = self.root / ".agent.lock"

    def slot_dir(self, slot: str) -> Path:
        return self.root / "slots" / slot

    # ---- identity -------------------------------------------------------------------------------
    def init_identity(self, device_id: str, hardware: str, signing_pub: str, device_key: bytes | None = None,
                      store: str = "file", store_options: dict | None = None) -> str:
        """Create identity/ (keeping an existing device key unless `device_key` is given, which goes into
        key store `store`); return the device public key (base64)."""
        check_device_id(device_id)
        check_id(hardware, "hardware name")
        decode_public(signing_pub, "signing public key")
        self.identity_dir.mkdir(parents=True, exist_ok=True)
        if device_key is None and not key_present(self.identity_dir):
            device_key = raw_private(X25519PrivateKey.generate())
        if device_key is not None:
            store_class(store).create(self.identity_dir, device_key, **(store_options or {}))
            public = encode_public(raw_public(X25519PrivateKey.from_private_bytes(device_key)))
        else:
            public = self.device_public()
        atomic_write(self.identity_dir / "device.json", json.dumps(
            {"device_id": device_id, "hardware": hardware, "device_public": public}).encode(), 0o644)
        atomic_write(self.identity_dir / "signing.pub", signing_pub.strip().encode() + b"\n", 0o644)
        return public

    def identity(self) -> dict:
        path = self.identity_dir / "device.json"
        try:
            doc = json.loads(path.read_text())
            check_device_id(doc["device_id"])
            return {"device_id": doc["device_id"], "hardware": str(doc["hardware"])}
        except FileNotFoundError as exc:
            raise ConfigError(f"{self.root} is not a provisioned keycam device root "
                              f"(no {path}; write it with `keycam keys export` or the agent's init)") from exc
        except (ValueError, KeyError, TypeError, BundleError) as exc:
            raise ConfigError(f"{path} is corrupted: {exc}") from exc

    def device_public(self) -> str:
        """The device's X25519 public key (base64): as device.json records it, else from the key store."""
        try:
            recorded = json.loads((self.identity_dir / "device.json").read_text()).get("device_public")
        except (OSError, ValueError, AttributeError):
            recorded = None
        return recorded if isinstance(recorded, str) else encode_public(raw_public(self.device_key()))

    def device_key(self) -> X25519PrivateKey:
        """The device's X25519 private key, from the key store its identity names (into memory only)."""
        return open_store(self.identity_dir).private_key()

    def trusted_signing_key(self) -> bytes:
        path = self.identity_dir / "signing.pub"
        if not path.exists():
            raise ConfigError(f"no trusted signing key at {path}")
        return decode_public(path.read_text(), str(path))

    def service_config(self) -> ServiceConfig:
        return load_service_config(self.root / "agent.yaml")

    # ---- state ----------------------------------------------------------------------------------
    def load_state(self) -> dict:
        if not self.state_path.exists():
            return {"committed": None, "version": None, "min_version": "0", "previous": None,
                    "trying": None, "history": []}
        try:
            return json.loads(self.state_path.read_text())
        except ValueError as exc:
            raise ConfigError(f"{self.state_path} is corrupted: {exc}") from exc

    def save_state(self, state: dict) -> None:
        state["history"] = state["history"][-50:]
        atomic_write(self.state_path, json.dumps(state, indent=1, sort_keys=True).encode(), 0o644)

    def current_slot(self) -> str | None:
        """The slot `current` points at (None when there is no link yet)."""
        try:
            target = os.readlink(self.current)
        except FileNotFoundError:
            return None
        return Path(target).name

    def switch(self, slot: str | None) -> None:
        """Atomically point `current` at a slot (rename of a fresh symlink); None removes the link."""
        if slot is None:
            if self.current.is_symlink():
                self.current.unlink()
                fsync_dir(self.current.parent)
            return
        tmp = self.current.with_name(".current.new")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(slot, tmp)
        os.replace(tmp, self.current)
        fsync_dir(self.current.parent)
