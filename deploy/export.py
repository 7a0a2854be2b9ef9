"""Write what a device needs straight onto its root (`keycam keys export`, e.g. an SD card's /var/lib/keycam).

The sealed keyed model, device.yaml, for a device without a faceplate its sealed sensor key, and
identity/ (device key in its key store, signing public key); optionally the keycam Mender update
module and the artifact verify key in the card's root file system. Re-exporting to the same root
keeps the device's key pair; the vault's copy of a vault-made private key leaves with the first export.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from base.atomic import atomic_write
from base.errors import ConfigError
from base.signing import encode_public, public_key_id, raw_private, raw_public
from deploy import mender
from deploy.device import DeviceRoot
from deploy.payload import CONFIG, IDENTITY_FROM_ROOT, MODEL, SENSOR_KEY, render_config
from keys import audit
from keys.fields import VaultError, b64d
from keys.generations import reseal_models, sealed_model
from keys.keystore import key_present, open_store, store_class
from keys.records import DeviceRecord, Generation
from keys.sealing import ROLE_MODEL, ROLE_SENSOR_KEY, context_for, seal, unseal
from keys.vault import Vault

CLEAR_MODEL_WARNING = (
    "WARNING: --clear-model writes {device}'s keyed model and sensor key in clear to {out}. The keyed model "
    "determines the sensor key (it can be solved from the model file in seconds): whoever reads these files "
    "can decrypt every keyed frame of this device. Research use only; never on a deployed device.")

# (device, generation) -> the generation's clear keyed model, made again from its secret (tools.provisioning)
Rekey = Callable[[DeviceRecord, Generation], bytes]


@dataclass(frozen=True)
class ExportOptions:
    """How to export: which key set, the device key's store, a new key pair, Mender, clear files."""
    keyset: str = "active"
    store: str | None = None
    tpm_tcti: str | None = None
    new_device_key: bool = False
    mender_rootfs: Path | None = None
    clear_model: bool = False

    def __post_init__(self) -> None:
        """An unavailable key store fails here, before the vault is opened or anything is written."""
        if self.tpm_tcti and self.store != "tpm2":
            raise ConfigError("--tpm-tcti is an option of --store tpm2")
        if self.store:
            problem = store_class(self.store).problem(**self.store_options)
            if problem:
                raise ConfigError(problem)

    @property
    def store_options(self) -> dict:
        """Options of the key store (the TPM connection)."""
        return {"tcti": self.tpm_tcti} if self.tpm_tcti else {}


def _device_key(dev: DeviceRecord, root: DeviceRoot, new_key: bool,
                store: str | None) -> tuple[str, X25519PrivateKey | None]:
    """(the device's public key, a private key to write to the root or None).

    Re-export to a root that holds the vault's device key keeps it; the vault's own copy of the private
    key (until the first export) goes to a root without a key; anything else needs --new-device-key."""
    device, vault_id = dev.device_id, public_key_id(b64d(dev.device_public, "device_public"))
    if new_key:
        key = X25519PrivateKey.generate()
        return encode_public(raw_public(key)), key
    if key_present(root.identity_dir):
        held = root.device_public()
        if held != dev.device_public:
            raise VaultError(f"{root.root} holds device key {public_key_id(b64d(held, 'device key'))}, but the "
                             f"vault records key {vault_id} for {device}: this root belongs to another key pair. "
                             "Pass --new-device-key to give it a new pair (bundles sealed to either old key then "
                             "no longer open on it)")
        have = open_store(root.identity_dir).name
        if store and store != have:
            raise ConfigError(f"{root.root} keeps {device}'s key in the {have} store; moving it to "
                              f"--store {store} needs --new-device-key")
        return held, None
    if dev.device_private is not None:
        return dev.device_public, X25519PrivateKey.from_private_bytes(b64d(dev.device_private, "device_private"))
    raise VaultError(
        f"{root.root} holds no device key and the vault holds no private key for {device} (it left with the "
        f"first export, or the device made its own): re-export to the device root that holds key {vault_id}, "
        "which keeps it. To flash a new card "
        "instead pass --new-device-key: the device gets a new key pair, bundles sealed to the old key no "
        "longer open, and the vault's models are re-sealed to the new key (re-keyed from their secrets)")


def export_device(vault: Vault, device_id: str, out: Path, options: ExportOptions, rekey: Rekey) -> list[str]:
    """Write DEVICE's files to the device root `out` and record the export (and any new device key) in
    the vault; return the paths written. The caller saves the vault (Vault.edit)."""
    root = DeviceRoot(out)
    dev = vault.device(device_id).require_usable()
    gen = dev.select(options.keyset)
    names = [MODEL] if dev.faceplate else [MODEL, SENSOR_KEY]
    config = render_config(device_id, dev.faceplate, names, dev.config,
                           identity=None if options.clear_model else IDENTITY_FROM_ROOT)
    public, new_private = _device_key(dev, root, options.new_device_key, options.store)
    if public != dev.device_public:
        reseal_models(dev, public, rekey)
        audit.record(vault, "device-key", device_id, old=dev.device_public, new=public)
        dev.device_public = public
    files = {MODEL: sealed_model(gen, device_id, public)}
    sensor = None if dev.faceplate else gen.key_set().sensor.to_bytes()
    if options.clear_model:
        click.echo(CLEAR_MODEL_WARNING.format(device=device_id, out=out), err=True)
        key = new_private or root.device_key()
        files[MODEL] = unseal(key, files[MODEL], context_for(device_id, ROLE_MODEL), f"{device_id}'s model")
        if sensor is not None:
            files[SENSOR_KEY] = sensor
    elif sensor is not None:
        files[SENSOR_KEY] = seal(b64d(public, "device_public"), sensor, context_for(device_id, ROLE_SENSOR_KEY))
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write(out / name, data, 0o600)
    atomic_write(out / CONFIG, config, 0o644)
    # the private key leaves the vault with the first export: from then on it lives only on the device
    dev.device_private = None
    signing = encode_public(b64d(vault.data["signing"]["public"], "signing.public"))
    root.init_identity(device_id, dev.hardware, signing, new_private and raw_private(new_private),
                       options.store or "file", options.store_options)
    written = [*files, CONFIG, "identity/"]
    if options.mender_rootfs:
        key = mender.mender_key(vault)
        written += [str(p) for p in mender.install_update_module(options.mender_rootfs, key.public_pem, dev.hardware)]
        mender.export_public(vault.path, key)
    audit.record(vault, "export", device_id, key_fingerprint=gen.key_fingerprint, out=str(out), files=written,
                 new_device_key=options.new_device_key, clear_model=options.clear_model)
    return written
