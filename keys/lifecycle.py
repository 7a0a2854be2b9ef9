"""Audited vault changes of the device lifecycle: create the vault, confirm, revoke, reveal.

Each function changes the typed records and queues its audit entry; the caller saves the vault
(`Vault.edit`), which appends the entries only if the change is written.
"""
from __future__ import annotations

from pathlib import Path

from base.signing import encode_public
from keys import audit
from keys.fields import b64d
from keys.records import DeviceRecord
from keys.vault import Vault


def signing_public_path(vault_path: Path) -> Path:
    """Where the bundle-signing public key is written beside the vault: <vault>.signing.pub."""
    return vault_path.with_name(vault_path.name + ".signing.pub")


def init_vault(path: Path, passphrase: str) -> tuple[Vault, Path]:
    """Create a vault with its bundle-signing key and audit log; return it and the public key file written."""
    vault = Vault.create(path, passphrase)
    audit.record(vault, "init", None, signing_key_id=vault.data["signing"]["key_id"])
    vault.save()
    pub_path = signing_public_path(vault.path)
    pub_path.write_text(encode_public(b64d(vault.data["signing"]["public"], "signing.public")) + "\n")
    return vault, pub_path


def confirm(vault: Vault, device_id: str, fingerprint: str | None = None, by: str | None = None) -> tuple[str, bool]:
    """Make a pending key set (default: the pending one) active; (its fingerprint, whether it changed)."""
    dev = vault.device(device_id)
    fingerprint = fingerprint or dev.generation(state="pending").key_fingerprint
    changed = dev.confirm(fingerprint)
    if changed:
        audit.record(vault, "confirm", device_id, key_fingerprint=fingerprint, **({"by": by} if by else {}))
    return fingerprint, changed


def confirm_running(vault: Vault, device_id: str, fingerprint: str, by: str) -> bool:
    """A device reports it runs `fingerprint`: if that is its pending key set, it becomes the active one."""
    dev = vault.devices.get(device_id)
    gen = dev.find(fingerprint) if dev is not None else None
    if gen is None or gen.state != "pending":
        return False
    return confirm(vault, device_id, fingerprint, by)[1]


def revoke(vault: Vault, device_id: str, reason: str) -> DeviceRecord:
    """Revoke a device and all its key sets; return its record."""
    dev = vault.device(device_id)
    dev.revoke()
    audit.record(vault, "revoke", device_id, reason=reason)
    return dev


def reveal(vault: Vault, device_id: str) -> DeviceRecord:
    """The device's record for showing its secrets (`DeviceRecord.public_view`): revealing is audited."""
    dev = vault.device(device_id)
    audit.record(vault, "reveal", device_id)
    return dev
