"""`keycam keys`: provision, rotate, revoke and inspect per-device keys kept in an encrypted vault.

The vault path comes from --vault, else $KEYCAM_VAULT, else ~/.keycam/vault.kcv. The passphrase
comes from --passphrase-file, else $KEYCAM_VAULT_PASSPHRASE, else an interactive prompt.
Every action that changes the vault is appended to the audit log beside it (<vault>.audit.jsonl).
The work is done by services: keys.lifecycle (vault state changes), tools.provisioning (key sets and
keyed models), deploy.export (device files), tools.decode (prediction records).
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import click

from base.cli import KeycamGroup, emit_result, json_option
from base.ids import check_id
from deploy.canary import CANARY_FRAMES
from keys import audit, lifecycle
from keys.keystore import STORES
from keys.profiles import DEFAULT_PROFILE, PROFILES
from keys.vault_cli import edit_vault, open_vault, passphrase, vault_options
from tools.provisioning import migration_canary


def _device_arg(value: str) -> str:
    """Validate a device id (also used for hardware names: same character set)."""
    return check_id(value, "device id", click.BadParameter)


def _canary_options(func):
    """--canary-frames and --canary-dataset: the health-check frames made while the clear model is in RAM."""
    func = click.option("--canary-dataset", help="dataset of the canary frames (default: the model's)")(func)
    return click.option("--canary-frames", default=CANARY_FRAMES, show_default=True, type=click.IntRange(1, 500),
                        help="canary frames kept in the vault for the on-device health check")(func)


@click.group(cls=KeycamGroup)
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
    vault, pub_path = lifecycle.init_vault(params["vault_path"], passphrase(params, confirm=True))
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

    \b
    Example:
      keycam keys provision cam-01 --model tools/models/lenet_fashion.onnx --profile stem --config cam-01.yaml
    """
    from deploy.payload import check_template
    from tools.provisioning import CanarySpec, DeviceSpec, device_key_pair, provision
    key_pair = device_key_pair(device_pubkey)
    template = check_template(config_path, device, faceplate) if config_path else None
    spec = DeviceSpec(device, model, profile, output_encryption, faceplate, hardware, template, calibration)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with edit_vault(params, migration_canary) as vault:
            gen = provision(vault, spec, key_pair, CanarySpec(canary_frames, canary_dataset)).generations[0]
            signal.signal(signal.SIGINT, signal.SIG_IGN)   # the save below commits: finish and report it
    except BaseException:                              # not committed: Ctrl-C works again
        signal.signal(signal.SIGINT, previous)
        raise
    if os.environ.get("KEYCAM_PROVISION_INTERRUPT_AT") == "committed":   # fault-test hook
        os.kill(os.getpid(), signal.SIGINT)
    emit_result(json_dest, {"device_id": device, "state": "active", "generation": gen.generation,
                            "profile": profile, "key_fingerprint": gen.key_fingerprint,
                            "sensor_fingerprint": gen.sensor_fingerprint, "model_id": gen.model_id,
                            "hardware": hardware, "faceplate": faceplate, "vault": str(params["vault_path"])},
                f"provisioned {device}: key set {gen.key_fingerprint[:16]}, model {gen.model_id}, "
                f"profile {profile}")


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
    rows = [d.summary() for _, d in sorted(vault.devices.items())]
    lines = [f"{'DEVICE':16} {'STATE':8} {'PROFILE':7} {'ACTIVE KEY':17} {'PENDING KEY':17} HW"]
    lines += [f"{r['device_id']:16} {r['state']:8} {r['profile']:7} {(r['active'] or '-')[:16]:17} "
              f"{(r['pending'] or '-')[:16]:17} {r['hardware']}{'' if r['faceplate'] else ' (no faceplate)'}"
              for r in rows]
    emit_result(json_dest, rows, "\n".join(lines) if rows else "no devices provisioned")


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
        with edit_vault(params, migration_canary) as vault:
            record = lifecycle.reveal(vault, device)
    else:
        record = open_vault(params).device(device)
    dev, private = record.public_view(reveal), record.device_private
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
    from tools.provisioning import CanarySpec
    from tools.provisioning import rotate as rotate_device
    with edit_vault(params, migration_canary) as vault:
        done = rotate_device(vault, device, model, profile, CanarySpec(canary_frames, canary_dataset))
    gen, current = done.pending, done.active
    emit_result(json_dest, {"device_id": device, "generation": gen.generation, "profile": gen.profile,
                            "pending": gen.key_fingerprint, "active": current.key_fingerprint,
                            "model_id": gen.model_id},
                f"{device}: new key set {gen.key_fingerprint[:16]} is pending; "
                f"{current.key_fingerprint[:16]} stays active until a deploy confirms the new one")


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
    with edit_vault(params, migration_canary) as vault:
        fp, changed = lifecycle.confirm(vault, device, fingerprint)
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
    with edit_vault(params, migration_canary) as vault:
        dev = lifecycle.revoke(vault, device, reason)
    emit_result(json_dest, {"device_id": device, "state": "revoked", "revoked": dev.revoked, "reason": reason},
                f"{device}: revoked")


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
    from tools.decode import RecordDecoder
    for rec in RecordDecoder(open_vault(params), device, top_k).lines(records):
        click.echo(json.dumps(rec, sort_keys=True))


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
    from deploy.export import ExportOptions, export_device
    from tools.provisioning import rekey
    options = ExportOptions(keyset, store, tpm_tcti, new_device_key, mender_rootfs, clear_model)
    with edit_vault(params, migration_canary) as vault:
        written = export_device(vault, device, out, options, rekey)
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
