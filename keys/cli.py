"""`keycam keys`: provision, rotate, revoke and inspect per-device keys kept in an encrypted vault.

The vault path comes from --vault, else $KEYCAM_VAULT, else ~/.keycam/vault.kcv. The passphrase
comes from --passphrase-file, else $KEYCAM_VAULT_PASSPHRASE, else an interactive prompt.
Every action that changes the vault is appended to the audit log beside it (<vault>.audit.jsonl).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Iterator

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from deploy.manifest import BundleError, check_device_id
from deploy.signing import SignatureError, decode_public, encode_public, raw_private, raw_public
from edge.cli_options import emit_result, json_option
from edge.errors import ConfigError, KeycamError
from keys import audit
from keys.keystore import STORES, store_class
from keys.generations import CANARY_FRAMES, migrate_clear_models, model_source, new_generation
from keys.vault import Vault, VaultError, b64d, b64e, now_iso
from tools.keying.profiles import DEFAULT_PROFILE, PROFILES

DEFAULT_VAULT = Path("~/.keycam/vault.kcv")
PASSPHRASE_ENV = "KEYCAM_VAULT_PASSPHRASE"


# ---- shared options ---------------------------------------------------------------------------------
def _passphrase(ctx_params: dict, confirm: bool = False) -> str:
    path = ctx_params.get("passphrase_file")
    if path == "-":                      # one line from stdin, e.g. from a secret manager's pipe
        if "_stdin_passphrase" not in ctx_params:       # read once: a command may open the vault twice
            ctx_params["_stdin_passphrase"] = sys.stdin.readline().rstrip("\r\n")
        text = ctx_params["_stdin_passphrase"]
        if not text:
            raise VaultError("--passphrase-file -: no passphrase on stdin")
        return text
    if path:
        try:
            text = Path(path).read_text().rstrip("\r\n")
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise VaultError(f"cannot read passphrase file {path}: {exc}") from exc
        if not text:
            raise VaultError(f"passphrase file {path} is empty")
        if mode & 0o077:
            click.echo(f"warning: passphrase file {path} is readable by group or others (mode "
                       f"{mode & 0o777:03o}); run: chmod 600 {path}", err=True)
        return text
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if not sys.stdin.isatty():
        raise VaultError(f"no vault passphrase: use --passphrase-file FILE (or - for stdin), "
                         f"${PASSPHRASE_ENV}, or a terminal")
    return click.prompt("Vault passphrase", hide_input=True, confirmation_prompt=confirm)


def vault_options(func):
    """Add --vault and --passphrase-file; the command receives `vault_path` and `passphrase_file`."""
    @click.option("--vault", "vault_path", type=click.Path(dir_okay=False, path_type=Path),
                  envvar="KEYCAM_VAULT", default=DEFAULT_VAULT, show_default=True,
                  help="vault file (else $KEYCAM_VAULT)")
    @click.option("--passphrase-file", type=click.Path(dir_okay=False, exists=True, allow_dash=True),
                  help=f"file holding the passphrase, - for one line on stdin (else ${PASSPHRASE_ENV} "
                       "or a prompt)")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        kwargs["vault_path"] = kwargs["vault_path"].expanduser()
        try:
            return func(*args, **kwargs)
        except KeycamError as exc:
            raise click.ClickException(str(exc)) from exc
    return wrapper


def open_vault(params: dict) -> Vault:
    return Vault.open(params["vault_path"], _passphrase(params))


@contextlib.contextmanager
def edit_vault(params: dict) -> Iterator[Vault]:
    """Open the vault for a change; clear keyed models of an older vault are sealed on this write."""
    with Vault.edit(params["vault_path"], _passphrase(params)) as vault:
        for device in migrate_clear_models(vault):
            click.echo(f"sealed {device}'s keyed models in the vault to its device key (older vault format)",
                       err=True)
            audit.record(vault, "seal-models", device, reason="the vault held clear keyed models")
        yield vault


def _device_arg(value: str) -> str:
    """Validate a device id (also used for hardware names: same character set)."""
    try:
        return check_device_id(value)
    except BundleError as exc:
        raise click.BadParameter(str(exc)) from exc


# ---- provisioning -----------------------------------------------------------------------------------
def _device_public(text: str | None) -> tuple[str, str | None]:
    """(public b64, private b64 or None): the device's own key, or a fresh pair held until export."""
    if text:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
        try:
            return encode_public(decode_public(raw, "--device-pubkey")), None
        except SignatureError as exc:
            raise ConfigError(str(exc)) from exc
    key = X25519PrivateKey.generate()
    return encode_public(raw_public(key)), b64e(raw_private(key))


def _canary_options(func):
    """--canary-frames and --canary-dataset: the health-check frames made while the clear model is in RAM."""
    func = click.option("--canary-dataset", help="dataset of the canary frames (default: the model's)")(func)
    return click.option("--canary-frames", default=CANARY_FRAMES, show_default=True, type=click.IntRange(1, 500),
                        help="canary frames kept in the vault for the on-device health check")(func)


@click.group()
def keys() -> None:
    """Per-device keys in an encrypted vault: provision, rotate, revoke, decode, export."""


@keys.command()
@vault_options
def init(**params) -> None:
    """Create a new vault (and its Ed25519 bundle-signing key).

    \b
    Example:
      keycam keys init --vault ~/.keycam/vault.kcv
    """
    vault = Vault.create(params["vault_path"], _passphrase(params, confirm=True))
    audit.record(vault, "init", None, signing_key_id=vault.data["signing"]["key_id"])
    vault.save()
    pub_path = vault.path.with_name(vault.path.name + ".signing.pub")
    pub_path.write_text(encode_public(b64d(vault.data["signing"]["public"], "signing.public")) + "\n")
    click.echo(f"vault created: {vault.path} (mode 0600)")
    click.echo(f"bundle-signing key {vault.data['signing']['key_id']}; public key: {pub_path}")


@keys.command()
@click.argument("device", callback=lambda c, p, v: _device_arg(v))
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="trained base model (.onnx)")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default=DEFAULT_PROFILE, show_default=True)
@click.option("--output-encryption", is_flag=True, help="also key the logits (decode with `keys decode`)")
@click.option("--faceplate/--no-faceplate", default=True, show_default=True,
              help="the device keys optically; without a faceplate its bundle carries the sensor key")
@click.option("--hardware", default="rpi4", show_default=True, callback=lambda c, p, v: _device_arg(v),
              help="hardware name bundles target")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="device config template (a `keycam run` YAML: camera, sinks, faceplate port/id)")
@click.option("--device-pubkey", help="the device's X25519 public key (base64, or @FILE); "
              "default: generate a pair whose private half leaves the vault with the first `keys export`")
@click.option("--calibration", type=click.Path(exists=True, path_type=Path), default=None,
              help="int8 calibration frames: a folder of images or an .npz of frames in the model's input size "
                   "(default: the model's dataset metadata; the command says which it used)")
@_canary_options
@json_option()
@vault_options
def provision(device, model, profile, output_encryption, faceplate, hardware, config_path, device_pubkey,
              calibration, canary_frames, canary_dataset, json_dest, **params) -> None:
    """Create DEVICE's key set, key and quantize MODEL for it, record it all in the vault.

    The keyed model is stored sealed to the device's key; its canary frames are computed now.
    Ctrl-C before the vault is saved changes nothing (exit 130); once the save begins the provision is
    finished and reported: the "provisioned" line is printed last and the command exits 0, whatever
    interrupt arrives after that point.

    
    Example:
      keycam keys provision cam-01 --model tools/models/lenet_fashion.onnx --profile stem --config cam-01.yaml
    """
    import signal

    from deploy.payload import check_template
    public, private = _device_public(device_pubkey)
    template = check_template(config_path, device, faceplate) if config_path else None
    previous = signal.getsignal(signal.SIGINT)
    try:
        with edit_vault(params) as vault:
            if device in vault.devices:
                raise VaultError(f"device {device!r} is already provisioned; "
                                 f"use `keycam keys rotate {device}`")
            gen = new_generation(model, device, public, profile, output_encryption, 1, canary_frames,
                                 canary_dataset, calibration)
            record = {"device_id": device, "created": now_iso(), "state": "active", "hardware": hardware,
                      "faceplate": faceplate, "device_public": public, "model_source": model_source(model),
                      "generations": [gen]}
            if private:
                record["device_private"] = private
            if template is not None:
                record["config"] = template
            vault.devices[device] = record
            audit.record(vault, "provision", device, key_fingerprint=gen["key_fingerprint"], profile=profile,
                         model_id=gen["model_id"], faceplate=faceplate)
            signal.signal(signal.SIGINT, signal.SIG_IGN)   # the save below commits: finish and report it
    except BaseException:                              # not committed: Ctrl-C works again
        signal.signal(signal.SIGINT, previous)
        raise
    if os.environ.get("KEYCAM_PROVISION_INTERRUPT_AT") == "committed":   # fault-test hook
        os.kill(os.getpid(), signal.SIGINT)
    emit_result(json_dest, {"device_id": device, "state": "active", "generation": gen["generation"],
                            "profile": profile, "key_fingerprint": gen["key_fingerprint"],
                            "sensor_fingerprint": gen["sensor_fingerprint"], "model_id": gen["model_id"],
                            "hardware": hardware, "faceplate": faceplate, "vault": str(params["vault_path"])},
                f"provisioned {device}: key set {gen['key_fingerprint'][:16]}, model {gen['model_id']}, "
                f"profile {profile}")


def _summary(dev: dict) -> dict:
    def fp(state):
        hits = [g["key_fingerprint"] for g in dev["generations"] if g["state"] == state]
        return hits[-1] if hits else None
    active = next((g for g in dev["generations"] if g["state"] == "active"), dev["generations"][-1])
    return {"device_id": dev["device_id"], "state": dev["state"], "hardware": dev["hardware"],
            "faceplate": dev["faceplate"], "profile": active["profile"], "model_id": active["model_id"],
            "active": fp("active"), "pending": fp("pending")}


@keys.command(name="list")
@json_option()
@vault_options
def list_(json_dest, **params) -> None:
    """List provisioned devices.

    \b
    Example:
      keycam keys list --json
    """
    vault = open_vault(params)
    rows = [_summary(d) for _, d in sorted(vault.devices.items())]
    lines = [f"{'DEVICE':16} {'STATE':8} {'PROFILE':7} {'ACTIVE KEY':17} {'PENDING KEY':17} HW"]
    lines += [f"{r['device_id']:16} {r['state']:8} {r['profile']:7} {(r['active'] or '-')[:16]:17} "
              f"{(r['pending'] or '-')[:16]:17} {r['hardware']}{'' if r['faceplate'] else ' (no faceplate)'}"
              for r in rows]
    emit_result(json_dest, rows, "\n".join(lines) if rows else "no devices provisioned")


_SECRET_FIELDS = ("secret", "keyset", "model_sealed", "canary", "model_int8")


@keys.command()
@click.argument("device")
@click.option("--reveal", is_flag=True, help="also print the secrets (device secret, key set, device key)")
@json_option()
@vault_options
def show(device, reveal, json_dest, **params) -> None:
    """Fingerprints and metadata of DEVICE (no secrets unless --reveal).

    \b
    Example:
      keycam keys show cam-01 --json
    """
    if reveal:  # revealing secrets is itself an audited action
        with edit_vault(params) as vault:
            dev = json.loads(json.dumps(vault.device(device)))
            audit.record(vault, "reveal", device)
    else:
        dev = json.loads(json.dumps(open_vault(params).device(device)))
    for gen in dev["generations"]:
        for name in _SECRET_FIELDS:
            value = gen.pop(name, None)
            if reveal and name == "secret":
                gen["secret_hex"] = b64d(value, name).hex()
    private = dev.pop("device_private", None)
    if reveal and private:
        dev["device_private"] = private
    lines = [f"device {dev['device_id']}: {dev['state']}, hardware {dev['hardware']}, "
             f"{'faceplate' if dev['faceplate'] else 'no faceplate (sensor key ships sealed)'}",
             f"  device public key {dev['device_public']}"
             + ("" if private is None else " (its private key stays in the vault until the first export)"),
             f"  model source {dev['model_source']['path']} sha256 {dev['model_source']['sha256'][:16]}"]
    for g in dev["generations"]:
        lines.append(f"  generation {g['generation']} [{g['state']}] created {g['created']} profile {g['profile']}"
                     f"{' +output-encryption' if g['output_encryption'] else ''}")
        lines.append(f"    key set {g['key_fingerprint']}\n    sensor  {g['sensor_fingerprint']}\n"
                     f"    model   {g['model_id']} int8 sha256 {g['model_sha256'][:16]}")
        if reveal:
            lines.append(f"    secret  {g['secret_hex']}")
    if reveal and private:
        lines.append(f"  device private key {private}")
    emit_result(json_dest, dev, "\n".join(lines))


@keys.command()
@click.argument("device")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="new base model (default: the one recorded at provisioning)")
@click.option("--profile", type=click.Choice(PROFILES), help="default: the current profile")
@_canary_options
@json_option()
@vault_options
def rotate(device, model, profile, canary_frames, canary_dataset, json_dest, **params) -> None:
    """New key set and keyed model for DEVICE; the old one stays active until a deploy confirms it.

    \b
    Example:
      keycam keys rotate cam-01
    """
    with edit_vault(params) as vault:
        dev = vault.require_usable(device)
        if any(g["state"] == "pending" for g in dev["generations"]):
            raise VaultError(f"{device} already has a pending key set; deploy and confirm it first")
        current = vault.generation(device)
        if model is None:
            model = Path(dev["model_source"]["path"])
            if not model.is_file() or model_source(model)["sha256"] != dev["model_source"]["sha256"]:
                raise ConfigError(f"the recorded model {model} is missing or changed; pass --model")
        gen = new_generation(model, device, dev["device_public"], profile or current["profile"],
                             current["output_encryption"], len(dev["generations"]) + 1, canary_frames, canary_dataset)
        dev["generations"].append(gen)
        dev["model_source"] = model_source(model)
        audit.record(vault, "rotate", device, pending=gen["key_fingerprint"], active=current["key_fingerprint"])
    emit_result(json_dest, {"device_id": device, "generation": gen["generation"], "profile": gen["profile"],
                            "pending": gen["key_fingerprint"], "active": current["key_fingerprint"],
                            "model_id": gen["model_id"]},
                f"{device}: new key set {gen['key_fingerprint'][:16]} is pending; "
                f"{current['key_fingerprint'][:16]} stays active until a deploy confirms the new one")


@keys.command()
@click.argument("device")
@click.option("--fingerprint", help="key set to confirm (default: the pending one)")
@json_option()
@vault_options
def confirm(device, fingerprint, json_dest, **params) -> None:
    """Make DEVICE's pending key set active (`deploy push --vault` does this after a healthy install).

    \b
    Example:
      keycam keys confirm cam-01
    """
    with edit_vault(params) as vault:
        fp = fingerprint or vault.generation(device, state="pending")["key_fingerprint"]
        changed = vault.confirm(device, fp)
        if changed:
            audit.record(vault, "confirm", device, key_fingerprint=fp)
    emit_result(json_dest, {"device_id": device, "active": fp, "changed": changed},
                f"{device}: key set {fp[:16]} is {'now' if changed else 'already'} active")


@keys.command()
@click.argument("device")
@click.option("--reason", default="", help="recorded in the audit log")
@json_option()
@vault_options
def revoke(device, reason, json_dest, **params) -> None:
    """Revoke DEVICE: no bundle or export can be made for it any more.

    \b
    Example:
      keycam keys revoke cam-01 --reason 'camera stolen' --json
    """
    with edit_vault(params) as vault:
        dev = vault.device(device)
        if dev["state"] == "revoked":
            raise VaultError(f"device {device!r} is already revoked")
        dev["state"], dev["revoked"] = "revoked", now_iso()
        for g in dev["generations"]:
            g["state"] = "revoked"
        audit.record(vault, "revoke", device, reason=reason)
    emit_result(json_dest, {"device_id": device, "state": "revoked", "revoked": dev["revoked"], "reason": reason},
                f"{device}: revoked")


def _generation_by_fingerprint(vault: Vault) -> dict[str, tuple[str, dict]]:
    return {g["key_fingerprint"]: (d["device_id"], g) for d in vault.devices.values() for g in d["generations"]}


@keys.command()
@click.argument("records", type=click.File("r"), default="-")
@click.option("--device", help="decode with this device's active key set when records carry no fingerprint")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 10))
@vault_options
def decode(records, device, top_k, **params) -> None:
    """Turn output-encrypted prediction records (JSON lines) back into labels, one JSON line each.

    Records without encrypted_logits (alarms, stats) pass through unchanged.

    \b
    Example:
      keycam keys decode records.jsonl --device cam-01 --top-k 3
    """
    from edge.egress import decode_encrypted_logits
    from keys.keyset import KeySet
    vault = open_vault(params)
    by_fp, cache = _generation_by_fingerprint(vault), {}
    for n, line in enumerate(records, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"line {n}: not a JSON record ({exc})") from exc
        if not isinstance(rec, dict) or "encrypted_logits" not in rec:   # alarms, stats, plain predictions
            click.echo(json.dumps(rec, sort_keys=True))
            continue
        enc = rec["encrypted_logits"]
        fp = rec.get("key_fingerprint")
        if fp:
            if fp not in by_fp:
                raise VaultError(f"line {n}: no key set with fingerprint {fp[:16]} in the vault")
            gen = by_fp[fp][1]
        elif device:
            gen = vault.generation(device)
        else:
            raise ConfigError(f"line {n}: the record has no key_fingerprint; pass --device")
        if gen["key_fingerprint"] not in cache:
            ks = KeySet.from_bytes(b64d(gen["keyset"], "keyset"))
            if ks.output is None:
                raise VaultError(f"line {n}: key set {gen['key_fingerprint'][:16]} has no output key "
                                 "(the model was provisioned without --output-encryption)")
            cache[gen["key_fingerprint"]] = ks.output
        key = cache[gen["key_fingerprint"]]
        labels = tuple(gen["labels"]) or tuple(str(i) for i in range(key.size))
        top = decode_encrypted_logits(enc, key, labels, top_k)
        out = {k: v for k, v in rec.items() if k != "encrypted_logits"}
        out["top_k"] = [{"label": label, "score": round(score, 6)} for label, score in top]
        click.echo(json.dumps(out, sort_keys=True))


CLEAR_MODEL_WARNING = (
    "WARNING: --clear-model writes {device}'s keyed model and sensor key in clear to {out}. The keyed model "
    "determines the sensor key (it can be solved from the model file in seconds): whoever reads these files "
    "can decrypt every keyed frame of this device. Research use only; never on a deployed device.")


def _device_key_for_export(dev: dict, root, new_key: bool, store: str | None) -> tuple[str, X25519PrivateKey | None]:
    """(the device's public key, a private key to write to the root or None) for `keys export`.

    Re-export to a root that holds the vault's device key keeps it; the vault's own copy of the private
    key (until the first export) goes to a root without a key; anything else needs --new-device-key."""
    from keys.keystore import key_present, open_store
    from keys.sealing import public_key_id
    device, vault_id = dev["device_id"], public_key_id(b64d(dev["device_public"], "device_public"))
    if new_key:
        key = X25519PrivateKey.generate()
        return encode_public(raw_public(key)), key
    if key_present(root.identity_dir):
        held = root.device_public()
        if held != dev["device_public"]:
            raise VaultError(f"{root.root} holds device key {public_key_id(b64d(held, 'device key'))}, but the "
                             f"vault records key {vault_id} for {device}: this root belongs to another key pair. "
                             "Pass --new-device-key to give it a new pair (bundles sealed to either old key then "
                             "no longer open on it)")
        have = open_store(root.identity_dir).name
        if store and store != have:
            raise ConfigError(f"{root.root} keeps {device}'s key in the {have} store; moving it to "
                              f"--store {store} needs --new-device-key")
        return held, None
    if "device_private" in dev:
        return dev["device_public"], X25519PrivateKey.from_private_bytes(b64d(dev["device_private"], "device_private"))
    raise VaultError(
        f"{root.root} holds no device key and the vault holds no private key for {device} (it left with the "
        f"first export, or the device made its own): re-export to the device root that holds key {vault_id}, "
        "which keeps it. To flash a new card "
        "instead pass --new-device-key: the device gets a new key pair, bundles sealed to the old key no "
        "longer open, and the vault's models are re-sealed to the new key (re-keyed from their secrets)")


def _reseal_models(dev: dict, new_public: str) -> None:
    """Seal the device's usable generations to a new device key (their models are made again)."""
    from keys.generations import rekey, seal_model
    for gen in dev["generations"]:
        if gen["state"] in ("active", "pending"):
            seal_model(gen, dev["device_id"], new_public, rekey(dev, gen))


@keys.command()
@click.argument("device")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="directory to write into (e.g. the SD card's /var/lib/keycam)")
@click.option("--keyset", default="active", show_default=True, help="active, pending, or a fingerprint")
@click.option("--store", type=click.Choice(sorted(STORES)),
              help="where the device keeps its private key: file (identity/device.key, 0600; the default "
              "for a new key) or tpm2 (sealed to the device's TPM); an existing key keeps its store")
@click.option("--tpm-tcti", help="TPM connection for --store tpm2, e.g. device:/dev/tpmrm0 or swtpm:port=2321")
@click.option("--new-device-key", is_flag=True,
              help="give the device a new key pair: bundles sealed to the old key no longer open on it; "
              "the vault's models are re-sealed to the new key")
@click.option("--mender-rootfs", type=click.Path(file_okay=False, path_type=Path),
              help="also install the keycam Mender update module and the artifact verify key into this root "
              "file system (the card's /, see deploy/MENDER.md)")
@click.option("--clear-model", is_flag=True,
              help="RESEARCH ONLY: write the keyed model and sensor key in clear (they give the sensor key away)")
@vault_options
def export(device, out, keyset, store, tpm_tcti, new_device_key, mender_rootfs, clear_model, **params) -> None:
    """Write what DEVICE needs: sealed keyed model, config, sealed sensor key (no faceplate only), identity.

    Re-exporting to the same root keeps the device's key pair.

    \b
    Example:
      keycam keys export cam-01 --out /media/sd/var/lib/keycam
    """
    from deploy.device import DeviceRoot
    from deploy.payload import CONFIG, IDENTITY_FROM_ROOT, MODEL, SENSOR_KEY, render_config
    from edge.atomic import atomic_write
    from keys.generations import sealed_model
    from keys.keyset import KeySet
    from keys.sealing import ROLE_MODEL, ROLE_SENSOR_KEY, context_for, seal, unseal
    if tpm_tcti and store != "tpm2":
        raise ConfigError("--tpm-tcti is an option of --store tpm2")
    store_options = {"tcti": tpm_tcti} if tpm_tcti else {}
    if store:   # an unavailable store fails here, before anything is written
        problem = store_class(store).problem(**store_options)
        if problem:
            raise ConfigError(problem)
    root = DeviceRoot(out)
    with edit_vault(params) as vault:
        dev = vault.require_usable(device)
        gen = vault.select(device, keyset)
        names = [MODEL] if dev["faceplate"] else [MODEL, SENSOR_KEY]
        config = render_config(dev, names, identity=None if clear_model else IDENTITY_FROM_ROOT)
        public, new_private = _device_key_for_export(dev, root, new_device_key, store)
        if public != dev["device_public"]:
            _reseal_models(dev, public)
            audit.record(vault, "device-key", device, old=dev["device_public"], new=public)
            dev["device_public"] = public
        files = {MODEL: sealed_model(gen, device, public)}
        sensor = None if dev["faceplate"] else KeySet.from_bytes(b64d(gen["keyset"], "keyset")).sensor.to_bytes()
        if clear_model:
            click.echo(CLEAR_MODEL_WARNING.format(device=device, out=out), err=True)
            key = new_private or root.device_key()
            files[MODEL] = unseal(key, files[MODEL], context_for(device, ROLE_MODEL), f"{device}'s model")
            if sensor is not None:
                files[SENSOR_KEY] = sensor
        elif sensor is not None:
            files[SENSOR_KEY] = seal(b64d(public, "device_public"), sensor, context_for(device, ROLE_SENSOR_KEY))
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write(out / name, data, 0o600)
        atomic_write(out / CONFIG, config, 0o644)
        # the private key leaves the vault with the first export: from then on it lives only on the device
        dev.pop("device_private", None)
        signing = encode_public(b64d(vault.data["signing"]["public"], "signing.public"))
        root.init_identity(device, dev["hardware"], signing, new_private and raw_private(new_private),
                           store or "file", store_options)
        written = [*files, CONFIG, "identity/"]
        if mender_rootfs:
            from deploy import mender
            key = mender.mender_key(vault)
            written += [str(p) for p in mender.install_update_module(mender_rootfs, key.public_pem, dev["hardware"])]
            mender.export_public(vault.path, key)
        audit.record(vault, "export", device, key_fingerprint=gen["key_fingerprint"], out=str(out), files=written,
                     new_device_key=new_device_key, clear_model=clear_model)
    click.echo(f"exported {device} to {out}: {', '.join(written)}"
               + (" (model and sensor key IN CLEAR)" if clear_model else " (model and sensor key sealed)"))


@keys.command(name="audit")
@json_option()
@vault_options
def audit_(json_dest, **params) -> None:
    """Print the audit log and check that it is intact (exit 1 if it was altered).

    \b
    Example:
      keycam keys audit --json
    """
    vault = open_vault(params)
    entries, problems = audit.read(vault)
    text = "\n".join(f"{e['seq']:5} {e['ts']} {e['user']:10} {e['action']:10} {e['device'] or '-'}"
                     f" {json.dumps(e['details'], sort_keys=True)}" for e in entries)
    emit_result(json_dest, {"entries": entries, "problems": problems},
                (text or "audit log is empty") + "".join(f"\nPROBLEM: {p}" for p in problems))
    if problems:
        raise click.ClickException(f"the audit log has {len(problems)} problem(s)")
