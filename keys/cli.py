"""`keycam keys`: provision, rotate, revoke and inspect per-device keys kept in an encrypted vault.

The vault path comes from --vault, else $KEYCAM_VAULT, else ~/.keycam/vault.kcv. The passphrase
comes from --passphrase-file, else $KEYCAM_VAULT_PASSPHRASE, else an interactive prompt.
Every action that changes the vault is appended to the audit log beside it (<vault>.audit.jsonl).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from deploy.manifest import BundleError, check_device_id
from deploy.signing import SignatureError, decode_public, encode_public, raw_private, raw_public
from edge.errors import ConfigError, KeycamError
from keys import audit
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


def edit_vault(params: dict):
    return Vault.edit(params["vault_path"], _passphrase(params))


def _device_arg(value: str) -> str:
    """Validate a device id (also used for hardware names: same character set)."""
    try:
        return check_device_id(value)
    except BundleError as exc:
        raise click.BadParameter(str(exc)) from exc


def _emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=1, sort_keys=True) if as_json else text)


# ---- provisioning -----------------------------------------------------------------------------------
def _keyed_generation(model: Path, device_id: str, profile: str, output_encryption: bool, n: int) -> dict:
    """Create a fresh secret, key and quantize the model for it; return the vault record."""
    from edge.runtime import read_metadata
    from tools.keying.provision import build_keyed_model
    click.echo(f"keying {model.name} for {device_id} (profile {profile}) ...", err=True)
    secret = os.urandom(32)
    prov = build_keyed_model(model, secret, device_id, profile, output_encryption=output_encryption,
                             float_model=False)
    meta = read_metadata(prov.tflite_int8)
    ks = prov.keyset
    rep = prov.report
    click.echo(f"  done in {rep.get('total_s', 0):.1f} s, int8 model {len(prov.tflite_int8)} bytes", err=True)
    return {"generation": n, "state": "active" if n == 1 else "pending", "created": now_iso(),
            "secret": b64e(secret), "keyset": b64e(ks.to_bytes()), "model_int8": b64e(prov.tflite_int8),
            "model_sha256": hashlib.sha256(prov.tflite_int8).hexdigest(), "profile": ks.profile,
            "output_encryption": ks.output is not None, "key_fingerprint": ks.fingerprint,
            "sensor_fingerprint": ks.sensor_fingerprint, "model_id": ks.model_id,
            "labels": list(meta.get("labels") or []),
            "report": {k: rep[k] for k in ("float_max_rel_error", "total_s", "size_int8") if k in rep}}


def _model_source(model: Path) -> dict:
    return {"path": str(model.resolve()), "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}


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


@click.group()
def keys() -> None:
    """Per-device keys in an encrypted vault: provision, rotate, revoke, decode, export."""


@keys.command()
@vault_options
def init(**params) -> None:
    """Create a new vault (and its Ed25519 bundle-signing key)."""
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
@vault_options
def provision(device, model, profile, output_encryption, faceplate, hardware, config_path, device_pubkey,
              **params) -> None:
    """Create DEVICE's key set, key and quantize MODEL for it, record it all in the vault."""
    from deploy.payload import check_template
    public, private = _device_public(device_pubkey)
    template = check_template(config_path, device, faceplate) if config_path else None
    with edit_vault(params) as vault:
        if device in vault.devices:
            raise VaultError(f"device {device!r} is already provisioned; use `keycam keys rotate {device}`")
        gen = _keyed_generation(model, device, profile, output_encryption, 1)
        record = {"device_id": device, "created": now_iso(), "state": "active", "hardware": hardware,
                  "faceplate": faceplate, "device_public": public, "model_source": _model_source(model),
                  "generations": [gen]}
        if private:
            record["device_private"] = private
        if template is not None:
            record["config"] = template
        vault.devices[device] = record
        audit.record(vault, "provision", device, key_fingerprint=gen["key_fingerprint"], profile=profile,
                     model_id=gen["model_id"], faceplate=faceplate)
    click.echo(f"provisioned {device}: key set {gen['key_fingerprint'][:16]}, model {gen['model_id']}, "
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
@click.option("--json", "as_json", is_flag=True)
@vault_options
def list_(as_json, **params) -> None:
    """List provisioned devices."""
    vault = open_vault(params)
    rows = [_summary(d) for _, d in sorted(vault.devices.items())]
    lines = [f"{'DEVICE':16} {'STATE':8} {'PROFILE':7} {'ACTIVE KEY':17} {'PENDING KEY':17} HW"]
    lines += [f"{r['device_id']:16} {r['state']:8} {r['profile']:7} {(r['active'] or '-')[:16]:17} "
              f"{(r['pending'] or '-')[:16]:17} {r['hardware']}{'' if r['faceplate'] else ' (no faceplate)'}"
              for r in rows]
    _emit(rows, as_json, "\n".join(lines) if rows else "no devices provisioned")


_SECRET_FIELDS = ("secret", "keyset", "model_int8")


@keys.command()
@click.argument("device")
@click.option("--reveal", is_flag=True, help="also print the secrets (device secret, key set, device key)")
@click.option("--json", "as_json", is_flag=True)
@vault_options
def show(device, reveal, as_json, **params) -> None:
    """Fingerprints and metadata of DEVICE (no secrets unless --reveal)."""
    if reveal:  # revealing secrets is itself an audited action
        with edit_vault(params) as vault:
            dev = json.loads(json.dumps(vault.device(device)))
            audit.record(vault, "reveal", device)
    else:
        dev = json.loads(json.dumps(open_vault(params).device(device)))
    for gen in dev["generations"]:
        for name in _SECRET_FIELDS:
            value = gen.pop(name)
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
    _emit(dev, as_json, "\n".join(lines))


@keys.command()
@click.argument("device")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="new base model (default: the one recorded at provisioning)")
@click.option("--profile", type=click.Choice(PROFILES), help="default: the current profile")
@vault_options
def rotate(device, model, profile, **params) -> None:
    """New key set and keyed model for DEVICE; the old one stays active until a deploy confirms it."""
    with edit_vault(params) as vault:
        dev = vault.require_usable(device)
        if any(g["state"] == "pending" for g in dev["generations"]):
            raise VaultError(f"{device} already has a pending key set; deploy and confirm it first")
        current = vault.generation(device)
        if model is None:
            model = Path(dev["model_source"]["path"])
            if not model.is_file() or _model_source(model)["sha256"] != dev["model_source"]["sha256"]:
                raise ConfigError(f"the recorded model {model} is missing or changed; pass --model")
        gen = _keyed_generation(model, device, profile or current["profile"], current["output_encryption"],
                                len(dev["generations"]) + 1)
        dev["generations"].append(gen)
        dev["model_source"] = _model_source(model)
        audit.record(vault, "rotate", device, pending=gen["key_fingerprint"], active=current["key_fingerprint"])
    click.echo(f"{device}: new key set {gen['key_fingerprint'][:16]} is pending; "
               f"{current['key_fingerprint'][:16]} stays active until a deploy confirms the new one")


@keys.command()
@click.argument("device")
@click.option("--fingerprint", help="key set to confirm (default: the pending one)")
@vault_options
def confirm(device, fingerprint, **params) -> None:
    """Make DEVICE's pending key set active (`deploy push --vault` does this after a healthy install)."""
    with edit_vault(params) as vault:
        fp = fingerprint or vault.generation(device, state="pending")["key_fingerprint"]
        changed = vault.confirm(device, fp)
        if changed:
            audit.record(vault, "confirm", device, key_fingerprint=fp)
    click.echo(f"{device}: key set {fp[:16]} is {'now' if changed else 'already'} active")


@keys.command()
@click.argument("device")
@click.option("--reason", default="", help="recorded in the audit log")
@vault_options
def revoke(device, reason, **params) -> None:
    """Revoke DEVICE: no bundle or export can be made for it any more."""
    with edit_vault(params) as vault:
        dev = vault.device(device)
        if dev["state"] == "revoked":
            raise VaultError(f"device {device!r} is already revoked")
        dev["state"], dev["revoked"] = "revoked", now_iso()
        for g in dev["generations"]:
            g["state"] = "revoked"
        audit.record(vault, "revoke", device, reason=reason)
    click.echo(f"{device}: revoked")


def _generation_by_fingerprint(vault: Vault) -> dict[str, tuple[str, dict]]:
    return {g["key_fingerprint"]: (d["device_id"], g) for d in vault.devices.values() for g in d["generations"]}


@keys.command()
@click.argument("records", type=click.File("r"), default="-")
@click.option("--device", help="decode with this device's active key set when records carry no fingerprint")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 10))
@vault_options
def decode(records, device, top_k, **params) -> None:
    """Turn output-encrypted prediction records (JSON lines) back into labels, one JSON line each.

    Records without encrypted_logits (alarms, stats) pass through unchanged."""
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


@keys.command()
@click.argument("device")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="directory to write into (e.g. the SD card's /var/lib/keycam)")
@click.option("--keyset", default="active", show_default=True, help="active, pending, or a fingerprint")
@vault_options
def export(device, out, keyset, **params) -> None:
    """Write what DEVICE needs: keyed model, config, sensor key (no faceplate only), device identity."""
    from deploy.device import DeviceRoot
    from deploy.payload import CONFIG, MODEL, SENSOR_KEY, render_config
    from edge.atomic import atomic_write
    with edit_vault(params) as vault:
        dev = vault.require_usable(device)
        gen = vault.select(device, keyset)
        files = {MODEL: b64d(gen["model_int8"], "model")}
        if not dev["faceplate"]:
            from keys.keyset import KeySet
            files[SENSOR_KEY] = KeySet.from_bytes(b64d(gen["keyset"], "keyset")).sensor.to_bytes()
        config = render_config(dev, files)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write(out / name, data, 0o600 if name == SENSOR_KEY else 0o644)
        atomic_write(out / CONFIG, config, 0o644)
        written = [*files, CONFIG]
        # the device's X25519 private key leaves the vault with the first export: from then on it
        # lives only on the device; exporting to a root without it makes the device a new key pair
        private = b64d(dev.pop("device_private"), "device_private") if "device_private" in dev else None
        signing = encode_public(b64d(vault.data["signing"]["public"], "signing.public"))
        public = DeviceRoot(out).init_identity(device, dev["hardware"], signing, private)
        if public != dev["device_public"]:
            audit.record(vault, "device-key", device, old=dev["device_public"], new=public)
            dev["device_public"] = public
        written += ["identity/device.json", "identity/signing.pub", "identity/device.key"]
        audit.record(vault, "export", device, key_fingerprint=gen["key_fingerprint"], out=str(out),
                     files=written)
    click.echo(f"exported {device} to {out}: {', '.join(written)}")


@keys.command(name="audit")
@click.option("--json", "as_json", is_flag=True)
@vault_options
def audit_(as_json, **params) -> None:
    """Print the audit log and check that it is intact (exit 1 if it was altered)."""
    vault = open_vault(params)
    entries, problems = audit.read(vault)
    text = "\n".join(f"{e['seq']:5} {e['ts']} {e['user']:10} {e['action']:10} {e['device'] or '-'}"
                     f" {json.dumps(e['details'], sort_keys=True)}" for e in entries)
    _emit({"entries": entries, "problems": problems}, as_json,
          (text or "audit log is empty") + "".join(f"\nPROBLEM: {p}" for p in problems))
    if problems:
        raise click.ClickException(f"the audit log has {len(problems)} problem(s)")
