"""A key-set generation's vault record, with its keyed model sealed to the device (host side).

The keyed .tflite determines the sensor key (issue 15), so the vault keeps it only sealed to the
device's X25519 public key (`model_sealed`, keys.sealing). Everything the host needs the clear model
for happens while it is in RAM at provisioning/rotation: the canary frames and the classes the
model gives them (`canary`, for the on-device health check). The clear model can be made again
only from the generation's secret and base model (`rekey`: keying is deterministic), which
`keys export --new-device-key` uses to re-seal the models to a new device key.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import click

from edge.errors import ConfigError
from keys.sealing import ROLE_MODEL, context_for, public_key_id, recipient_key_id, seal
from keys.vault import Vault, VaultError, b64d, b64e, now_iso

CANARY_FRAMES = 16


def model_source(model: Path) -> dict:
    """Where a generation's base model came from (checked before it is used again)."""
    return {"path": str(Path(model).resolve()), "sha256": hashlib.sha256(Path(model).read_bytes()).hexdigest()}


def _canary(model: bytes, keyset, count: int, dataset: str | None) -> str:
    """Keyed canary frames and the classes the clear model gives them (.npz, base64)."""
    from deploy.canary import make_canary
    from deploy.health import save_canary
    frames, expected = make_canary(model, keyset, count, dataset=dataset)
    return b64e(save_canary(frames, expected))


def seal_model(gen: dict, device_id: str, device_public: str, model: bytes) -> None:
    """Store the clear `model` in `gen` sealed to the device's public key (base64 text)."""
    gen["model_sealed"] = b64e(seal(b64d(device_public, "device_public"), model, context_for(device_id, ROLE_MODEL)))
    gen["model_sha256"] = hashlib.sha256(model).hexdigest()


def new_generation(model: Path, device_id: str, device_public: str, profile: str, output_encryption: bool,
                   n: int, canary_frames: int = CANARY_FRAMES, canary_dataset: str | None = None,
                   calibration: Path | None = None) -> dict:
    """Create a fresh secret, key and quantize the model for it (int8 calibrated on `calibration`, a folder of
    images or an .npz, else the model's dataset); return the vault record."""
    from edge.runtime import read_metadata
    from tools.keying.calibration import path_digest
    from tools.keying.provision import build_keyed_model
    click.echo(f"keying {model.name} for {device_id} (profile {profile}) ...", err=True)
    secret = os.urandom(32)
    prov = build_keyed_model(model, secret, device_id, profile, output_encryption=output_encryption,
                             float_model=False, calibration=calibration)
    ks, rep = prov.keyset, prov.report
    click.echo(f"  calibrated int8 on {rep['calibration']}", err=True)
    click.echo(f"  computing {canary_frames} canary frames with the clear model (in memory) ...", err=True)
    gen = {"generation": n, "state": "active" if n == 1 else "pending", "created": now_iso(),
           "secret": b64e(secret), "keyset": b64e(ks.to_bytes()), "profile": ks.profile,
           "output_encryption": ks.output is not None, "key_fingerprint": ks.fingerprint,
           "sensor_fingerprint": ks.sensor_fingerprint, "model_id": ks.model_id,
           "model_source": model_source(model),
           "labels": list(read_metadata(prov.tflite_int8).get("labels") or []),
           "canary": _canary(prov.tflite_int8, ks, canary_frames, canary_dataset),
           "report": {k: rep[k] for k in ("float_max_rel_error", "total_s", "size_int8", "calibration") if k in rep}}
    if calibration is not None:
        gen["calibration"] = {"path": str(Path(calibration).resolve()), "sha256": path_digest(calibration)}
    seal_model(gen, device_id, device_public, prov.tflite_int8)
    click.echo(f"  done in {rep.get('total_s', 0):.1f} s, int8 model {len(prov.tflite_int8)} bytes, "
               "stored sealed to the device key", err=True)
    return gen


def rekey(dev: dict, gen: dict) -> bytes:
    """The generation's clear keyed model, made again from its secret and base model (in memory)."""
    from tools.keying.provision import build_keyed_model
    source = gen.get("model_source") or dev["model_source"]
    path = Path(source["path"])
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != source["sha256"]:
        raise ConfigError(f"cannot make {dev['device_id']}'s key set {gen['key_fingerprint'][:16]} again: its base "
                          f"model {path} is missing or changed (restore it, or rotate the device instead)")
    calibration = gen.get("calibration")
    if calibration is not None:
        from tools.keying.calibration import path_digest
        if not Path(calibration["path"]).exists() or path_digest(calibration["path"]) != calibration["sha256"]:
            raise ConfigError(f"cannot make {dev['device_id']}'s key set {gen['key_fingerprint'][:16]} again: its "
                              f"calibration frames {calibration['path']} are missing or changed (restore them, or "
                              "rotate the device instead)")
    click.echo(f"re-keying {path.name} for {dev['device_id']} key set {gen['key_fingerprint'][:16]} ...", err=True)
    model = build_keyed_model(path, b64d(gen["secret"], "secret"), dev["device_id"], gen["profile"],
                              output_encryption=gen["output_encryption"], float_model=False,
                              calibration=calibration["path"] if calibration else None).tflite_int8
    if hashlib.sha256(model).hexdigest() != gen["model_sha256"]:
        raise VaultError(f"re-keying {dev['device_id']}'s key set {gen['key_fingerprint'][:16]} gave a different "
                         "model than the one provisioned (another keycam version?); rotate the device instead")
    return model


def sealed_model(gen: dict, device_id: str, device_public: str) -> bytes:
    """The generation's sealed model, refusing one sealed to another key than the device's current one."""
    blob = b64d(gen["model_sealed"], "model_sealed")
    want = public_key_id(b64d(device_public, "device_public"))
    have = recipient_key_id(blob, f"{device_id}'s model in the vault")
    if have != want:
        raise VaultError(f"{device_id}'s key set {gen['key_fingerprint'][:16]} is sealed to device key {have}, "
                         f"not to its current key {want}; it cannot be deployed (rotate the device)")
    return blob


def migrate_clear_models(vault: Vault) -> list[str]:
    """Seal every clear `model_int8` an older vault holds (computing the canary it lacks); return the
    devices changed. Called on every vault write, so a clear model never outlives the next one."""
    changed = []
    for dev in vault.devices.values():
        for gen in dev["generations"]:
            if "model_int8" not in gen:
                continue
            model = b64d(gen.pop("model_int8"), "model_int8")
            if "canary" not in gen and gen["state"] in ("active", "pending"):
                from keys.keyset import KeySet
                gen["canary"] = _canary(model, KeySet.from_bytes(b64d(gen["keyset"], "keyset")), CANARY_FRAMES, None)
            seal_model(gen, dev["device_id"], dev["device_public"], model)
            if dev["device_id"] not in changed:
                changed.append(dev["device_id"])
    return changed
