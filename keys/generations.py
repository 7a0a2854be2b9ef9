"""A key-set generation's keyed model, kept in the vault sealed to the device (host side).

The keyed .tflite determines the sensor key (issue 15), so the vault keeps it only sealed to the
device's X25519 public key (`model_sealed`, keys.sealing). Everything the host needs the clear model
for happens while it is in RAM at provisioning/rotation (tools.provisioning): the canary frames and
the classes the model gives them (`canary`, for the on-device health check). The clear model can be
made again only from the generation's secret and base model (keying is deterministic), which
`keys export --new-device-key` uses to re-seal the models to a new device key.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from base.signing import public_key_id
from keys.fields import VaultError, b64d, b64e
from keys.records import DeviceRecord, Generation
from keys.sealing import ROLE_MODEL, context_for, recipient_key_id, seal
from keys.vault import Vault

if TYPE_CHECKING:
    from keys.keyset import KeySet

# (clear int8 model, its key set) -> canary frames and expected classes (.npz, base64), made by the host
CanaryMaker = Callable[[bytes, "KeySet"], str]


def seal_model(gen: Generation, device_id: str, device_public: str, model: bytes) -> None:
    """Store the clear `model` in `gen` sealed to the device's public key (base64 text)."""
    gen.model_sealed = b64e(seal(b64d(device_public, "device_public"), model, context_for(device_id, ROLE_MODEL)))
    gen.model_sha256 = hashlib.sha256(model).hexdigest()


def sealed_model(gen: Generation, device_id: str, device_public: str) -> bytes:
    """The generation's sealed model, refusing one sealed to another key than the device's current one."""
    if gen.model_sealed is None:
        raise VaultError(f"{device_id}'s key set {gen.key_fingerprint[:16]} holds no sealed model; "
                         "open the vault for a change once (any `keycam keys` command that writes) to seal it")
    blob = b64d(gen.model_sealed, "model_sealed")
    want = public_key_id(b64d(device_public, "device_public"))
    have = recipient_key_id(blob, f"{device_id}'s model in the vault")
    if have != want:
        raise VaultError(f"{device_id}'s key set {gen.key_fingerprint[:16]} is sealed to device key {have}, "
                         f"not to its current key {want}; it cannot be deployed (rotate the device)")
    return blob


def reseal_models(dev: DeviceRecord, new_public: str, rekey: Callable[[DeviceRecord, Generation], bytes]) -> None:
    """Seal the device's usable generations to a new device key; `rekey` makes each clear model again."""
    for gen in dev.generations:
        if gen.usable:
            seal_model(gen, dev.device_id, new_public, rekey(dev, gen))


def migrate_clear_models(vault: Vault, make_canary: CanaryMaker) -> list[str]:
    """Seal every clear `model_int8` an older vault holds (computing the canary a usable generation
    lacks); return the devices changed. Called on every vault write, so a clear model never outlives
    the next one."""
    changed = []
    for dev in vault.devices.values():
        for gen in dev.generations:
            if gen.model_int8 is None:
                continue
            model = b64d(gen.model_int8, "model_int8")
            if gen.canary is None and gen.usable:
                gen.canary = make_canary(model, gen.key_set())
            seal_model(gen, dev.device_id, dev.device_public, model)
            gen.model_int8 = None
            if dev.device_id not in changed:
                changed.append(dev.device_id)
    return changed
