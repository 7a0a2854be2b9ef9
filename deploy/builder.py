"""Build a device's signed bundle from the vault (host side).

Payload: model.tflite (the device's keyed int8 model), canary.npz (keyed canary frames + expected
classes for the health check), device.yaml (the device's service config), and for a device without
a faceplate sensor.key (the sensor key A0, sealed to the device's X25519 key).
"""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from deploy.bundle import write_bundle
from deploy.canary import make_canary
from deploy.health import save_canary
from deploy.manifest import Manifest, parse_version
from deploy.payload import CANARY, CONFIG, MODEL, SENSOR_KEY, render_config
from deploy.signing import SEAL_ALG, public_key_id, seal
from keys.keyset import KeySet
from keys.vault import Vault, b64d, now_iso


def build(vault: Vault, device_id: str, version: str, out: Path, minimum_version: str = "0",
          keyset: str = "active", hardware: list[str] | None = None, canary_count: int = 16,
          canary_source: Path | None = None, canary_dataset: str | None = None,
          health_timeout_s: float = 30.0, config: dict | None = None) -> tuple[Path, Manifest]:
    """Write `out` (a file, or a directory to hold <device>-<version>.bundle); return path and manifest.

    `config` is a device config template overriding the one recorded in the vault."""
    device = vault.require_usable(device_id)
    gen = vault.select(device_id, keyset)
    parse_version(version)
    parse_version(minimum_version)
    ks = KeySet.from_bytes(b64d(gen["keyset"], "keyset"))
    model = b64d(gen["model_int8"], "model")
    frames, expected = make_canary(model, ks, canary_count, canary_source, canary_dataset)
    payload, secrets = {MODEL: model, CANARY: save_canary(frames, expected)}, {}
    plain = {MODEL: model} if device["faceplate"] else {MODEL: model, SENSOR_KEY: ks.sensor.to_bytes()}
    payload[CONFIG] = render_config(device, plain, config)
    if not device["faceplate"]:
        device_pub = b64d(device["device_public"], "device_public")
        payload[SENSOR_KEY] = seal(device_pub, plain[SENSOR_KEY], f"{device_id}/{SENSOR_KEY}")
        secrets[SENSOR_KEY] = {"alg": SEAL_ALG,
                               "device_key_id": public_key_id(X25519PublicKey.from_public_bytes(device_pub))}
    manifest = Manifest(
        device_id=device_id, version=version, minimum_version=minimum_version,
        compatible=list(hardware or [device["hardware"]]), files={},
        keys={"model": MODEL, "key_fingerprint": gen["key_fingerprint"],
              "sensor_fingerprint": gen["sensor_fingerprint"], "model_id": gen["model_id"],
              "profile": gen["profile"], "output_encrypted": gen["output_encryption"]},
        secrets=secrets, health={"canary": CANARY, "timeout_s": health_timeout_s, "frames": len(frames)},
        created=now_iso())
    out = Path(out)
    path = out / f"{device_id}-{version}.bundle" if out.is_dir() else out
    return path, write_bundle(path, manifest, payload, vault.signing_private())
