"""Provisioning service (host side): make a device's key-set generations and record them in the vault.

A generation is made from a fresh 32-byte secret: the base model is keyed and quantized for it
(tools.keying.provision), and while the clear keyed model is in RAM the canary frames of the
on-device health check are computed (deploy.canary); the vault then keeps the model only sealed to
the device key (keys.generations). `rekey` makes a generation's clear model again from its secret
(keying is deterministic), for re-sealing to a new device key at export.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from base.clock import now_iso
from base.errors import ConfigError
from base.signing import SignatureError, decode_public, encode_public, raw_private, raw_public
from deploy.canary import CANARY_FRAMES, vault_canary
from edge.runtime import read_metadata
from keys import audit
from keys.fields import VaultError, b64e
from keys.generations import seal_model
from keys.profiles import DEFAULT_PROFILE
from keys.records import DeviceRecord, Generation, ModelSource
from keys.vault import Vault
from tools.datasets import plain_frames
from tools.keying.provision import build_keyed_model


def migration_canary(model_bytes: bytes, keyset) -> str:
    """The canary an older vault's generation gets when its clear model is sealed (keys.generations.CanaryMaker)."""
    return vault_canary(model_bytes, keyset, plain_frames)


@dataclass(frozen=True)
class CanarySpec:
    """How many canary frames a generation keeps, and from which dataset (None: the model's)."""
    frames: int = CANARY_FRAMES
    dataset: str | None = None


@dataclass(frozen=True)
class DeviceSpec:
    """What `keys provision` records for a new device."""
    device_id: str
    model: Path
    profile: str = DEFAULT_PROFILE
    output_encryption: bool = False
    faceplate: bool = True
    hardware: str = "rpi4"
    template: dict | None = None            # device config template (a checked `keycam run` YAML)
    calibration: Path | None = None         # int8 calibration frames (None: the model's dataset)


@dataclass(frozen=True)
class Rotation:
    """A rotation's result: the new pending generation and the one that stays active until confirmed."""
    pending: Generation
    active: Generation


def device_key_pair(text: str | None) -> tuple[str, str | None]:
    """(public b64, private b64 or None): the device's own key (base64, or @FILE), or a fresh pair whose
    private half the vault holds until the first export."""
    if text:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
        try:
            return encode_public(decode_public(raw, "--device-pubkey")), None
        except SignatureError as exc:
            raise ConfigError(str(exc)) from exc
    key = X25519PrivateKey.generate()
    return encode_public(raw_public(key)), b64e(raw_private(key))


def new_generation(model: Path, device_id: str, device_public: str, profile: str, output_encryption: bool,
                   n: int, canary: CanarySpec, calibration: Path | None = None) -> Generation:
    """Create a fresh secret, key and quantize the model for it (int8 calibrated on `calibration`, a folder of
    images or an .npz, else the model's dataset); return the generation (model sealed)."""
    click.echo(f"keying {model.name} for {device_id} (profile {profile}) ...", err=True)
    secret = os.urandom(32)
    prov = build_keyed_model(model, secret, device_id, profile, output_encryption=output_encryption,
                             float_model=False, calibration=calibration)
    ks, rep = prov.keyset, prov.report
    click.echo(f"  calibrated int8 on {rep['calibration']}", err=True)
    click.echo(f"  computing {canary.frames} canary frames with the clear model (in memory) ...", err=True)
    gen = Generation(
        generation=n, state="active" if n == 1 else "pending", created=now_iso(), secret=b64e(secret),
        keyset=b64e(ks.to_bytes()), profile=ks.profile, output_encryption=ks.output is not None,
        key_fingerprint=ks.fingerprint, sensor_fingerprint=ks.sensor_fingerprint, model_id=ks.model_id,
        model_source=ModelSource.of(model), labels=list(read_metadata(prov.tflite_int8).get("labels") or []),
        canary=vault_canary(prov.tflite_int8, ks, plain_frames, canary.frames, canary.dataset),
        report={k: rep[k] for k in ("float_max_rel_error", "total_s", "size_int8", "calibration") if k in rep},
        calibration=ModelSource.of(calibration) if calibration is not None else None)
    seal_model(gen, device_id, device_public, prov.tflite_int8)
    click.echo(f"  done in {rep.get('total_s', 0):.1f} s, int8 model {len(prov.tflite_int8)} bytes, "
               "stored sealed to the device key", err=True)
    return gen


def rekey(dev: DeviceRecord, gen: Generation) -> bytes:
    """The generation's clear keyed model, made again from its secret and base model (in memory)."""
    source = gen.model_source or dev.model_source
    path = Path(source.path)
    if not source.unchanged():
        raise ConfigError(f"cannot make {dev.device_id}'s key set {gen.key_fingerprint[:16]} again: its base "
                          f"model {path} is missing or changed (restore it, or rotate the device instead)")
    if gen.calibration is not None and not gen.calibration.unchanged():
        raise ConfigError(f"cannot make {dev.device_id}'s key set {gen.key_fingerprint[:16]} again: its calibration "
                          f"frames {gen.calibration.path} are missing or changed (restore them, or rotate the device "
                          "instead)")
    click.echo(f"re-keying {path.name} for {dev.device_id} key set {gen.key_fingerprint[:16]} ...", err=True)
    model = build_keyed_model(path, gen.secret_bytes(), dev.device_id, gen.profile,
                              output_encryption=gen.output_encryption, float_model=False,
                              calibration=gen.calibration.path if gen.calibration else None).tflite_int8
    if hashlib.sha256(model).hexdigest() != gen.model_sha256:
        raise VaultError(f"re-keying {dev.device_id}'s key set {gen.key_fingerprint[:16]} gave a different "
                         "model than the one provisioned (another keycam version?); rotate the device instead")
    return model


def provision(vault: Vault, spec: DeviceSpec, device_key: tuple[str, str | None],
              canary: CanarySpec = CanarySpec()) -> DeviceRecord:
    """Record a new device with its first (active) generation; `device_key` is (public, vault-held private
    or None) from `device_key_pair`. The caller saves the vault."""
    vault.require_new(spec.device_id)
    public, private = device_key
    gen = new_generation(spec.model, spec.device_id, public, spec.profile, spec.output_encryption, 1, canary,
                         spec.calibration)
    record = DeviceRecord(device_id=spec.device_id, created=now_iso(), state="active", hardware=spec.hardware,
                          faceplate=spec.faceplate, device_public=public, model_source=ModelSource.of(spec.model),
                          generations=[gen], device_private=private, config=spec.template)
    vault.add_device(record)
    audit.record(vault, "provision", spec.device_id, key_fingerprint=gen.key_fingerprint, profile=spec.profile,
                 model_id=gen.model_id, faceplate=spec.faceplate)
    return record


def rotate(vault: Vault, device_id: str, model: Path | None = None, profile: str | None = None,
           canary: CanarySpec = CanarySpec()) -> Rotation:
    """Add a pending generation (new secret, key set and keyed model; default: the recorded base model
    and the current profile); the active one stays until a deploy confirms the new one."""
    dev = vault.device(device_id).require_rotatable()
    current = dev.generation()
    if model is None:
        model = Path(dev.model_source.path)
        if not dev.model_source.unchanged():
            raise ConfigError(f"the recorded model {model} is missing or changed; pass --model")
    gen = new_generation(model, device_id, dev.device_public, profile or current.profile, current.output_encryption,
                         len(dev.generations) + 1, canary)
    dev.add_generation(gen, ModelSource.of(model))
    audit.record(vault, "rotate", device_id, pending=gen.key_fingerprint, active=current.key_fingerprint)
    return Rotation(gen, current)
