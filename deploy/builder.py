"""Build a device's signed bundle from the vault (host side).

Payload: model.tflite (the device's keyed int8 model), canary.npz (keyed canary frames + expected
classes for the health check), device.yaml (the device's service config), and for a device without
a faceplate sensor.key (the sensor key A0). The model, the canary and the sensor key are key
material: each is sealed to the device's X25519 key (keys.sealing) and stays sealed in the bundle
and in the device's slot. The host never holds the clear model here: the vault keeps it sealed, and
the canary was computed at provisioning, while the clear model was in memory (tools.provisioning).
"""
from __future__ import annotations

from pathlib import Path

from base.clock import now_iso
from base.errors import ConfigError
from base.signing import public_key_id
from deploy.bundle import write_bundle
from deploy.health import load_canary, save_canary
from deploy.manifest import Manifest, parse_version
from deploy.payload import CANARY, CONFIG, MODEL, SENSOR_KEY, render_config
from keys.fields import VaultError, b64d
from keys.generations import sealed_model
from keys.records import Generation
from keys.sealing import ROLE_CANARY, ROLE_MODEL, ROLE_SENSOR_KEY, SEAL_ALG, context_for, seal
from keys.vault import Vault


def _canary(gen: Generation, device_id: str, count: int | None) -> tuple[bytes, int]:
    """The first `count` (None: all) canary frames the vault keeps for this generation (.npz bytes, count)."""
    if gen.canary is None:
        raise VaultError(f"{device_id}'s key set {gen.key_fingerprint[:16]} has no canary frames in the vault; "
                         f"rotate the device (`keycam keys rotate {device_id}`) to make a generation with them")
    frames, expected = load_canary(b64d(gen.canary, "canary"), "the vault's canary")
    count = len(frames) if count is None else count
    if count > len(frames):
        raise ConfigError(f"--canary-frames {count}: the vault keeps {len(frames)} canary frames for "
                          f"{device_id}'s key set {gen.key_fingerprint[:16]} (set at provision/rotate)")
    return save_canary(frames[:count], expected[:count]), count


def build(vault: Vault, device_id: str, version: str, out: Path, minimum_version: str = "0",
          keyset: str = "active", hardware: list[str] | None = None, canary_count: int | None = None,
          health_timeout_s: float = 30.0, config: dict | None = None) -> tuple[Path, Manifest]:
    """Write `out` (a file, or a directory to hold <device>-<version>.bundle); return path and manifest.

    `config` is a device config template overriding the one recorded in the vault."""
    device = vault.device(device_id).require_usable()
    gen = device.select(keyset)
    parse_version(version)
    parse_version(minimum_version)
    device_pub = b64d(device.device_public, "device_public")
    canary, canary_count = _canary(gen, device_id, canary_count)
    clear = {CANARY: (ROLE_CANARY, canary)}
    if not device.faceplate:
        clear[SENSOR_KEY] = (ROLE_SENSOR_KEY, gen.key_set().sensor.to_bytes())
    payload = {name: seal(device_pub, data, context_for(device_id, role)) for name, (role, data) in clear.items()}
    payload[MODEL] = sealed_model(gen, device_id, device.device_public)
    payload[CONFIG] = render_config(device_id, device.faceplate, payload, device.config if config is None else config)
    roles = {MODEL: ROLE_MODEL, **{name: role for name, (role, _) in clear.items()}}
    secrets = {name: {"alg": SEAL_ALG, "device_key_id": public_key_id(device_pub), "role": role}
               for name, role in roles.items()}
    manifest = Manifest(
        device_id=device_id, version=version, minimum_version=minimum_version,
        compatible=list(hardware or [device.hardware]), files={},
        keys={"model": MODEL, "key_fingerprint": gen.key_fingerprint,
              "sensor_fingerprint": gen.sensor_fingerprint, "model_id": gen.model_id,
              "profile": gen.profile, "output_encrypted": gen.output_encryption},
        secrets=secrets, health={"canary": CANARY, "timeout_s": health_timeout_s, "frames": canary_count},
        created=now_iso())
    out = Path(out)
    path = out / f"{device_id}-{version}.bundle" if out.is_dir() else out
    return path, write_bundle(path, manifest, payload, vault.signing_private())
