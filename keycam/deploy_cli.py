"""`keycam deploy`: build and verify signed bundles, push them to devices, query and roll back slots.

Targets are `dir:PATH` (a device root on a mounted SD card, first flash) or
`ssh://[user@]host[:port]/device/root`; a fleet is listed in an inventory YAML (see deploy/inventory.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from base.cli import JSON_STDOUT, KeycamGroup, emit_json, emit_result, json_option
from base.errors import ConfigError, KeycamError
from base.signing import decode_public
from deploy import fleet
from deploy.bundle import verify_bundle
from deploy.inventory import Entry, load_inventory, select
from keys import audit, lifecycle
from keys.fields import b64d
from keys.vault_cli import PASSPHRASE_ENV, edit_vault, open_vault, vault_options
from tools.provisioning import migration_canary


def _trusted(pubkey: Path | None, params: dict) -> bytes:
    """The trusted signing public key: --pubkey FILE, else the vault's."""
    if pubkey is not None:
        return decode_public(pubkey.read_text(), str(pubkey))
    return b64d(open_vault(params).data["signing"]["public"], "signing.public")


def _entries(inventory: Path | None, limit: tuple[str, ...], target: str | None, device: str | None,
             python: str | None) -> list[Entry]:
    if (inventory is None) == (target is None):
        raise ConfigError("give either --inventory FILE or --target dir:PATH|ssh://...")
    if inventory is not None:
        return select(load_inventory(inventory), limit)
    return [Entry(device or "", target, None, {"python": python} if python else {})]


def _result_line(r: dict) -> str:
    """One push result for people: device, status, version transition, reason or slot."""
    extra = r.get("reason") or (f"slot {r['slot']}" if r.get("slot") else "")
    versions = (f"bundle {r.get('version') or '-'}" if r["status"] in ("refused", "failed", "skipped", "interrupted")
                else f"{r.get('from_version') or '-'} -> {r.get('version') or '-'}")   # no transition
    return f"{r['device']:16} {r['status']:17} {versions}  {extra}"


_PUBKEY = click.option("--pubkey", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                       help="trusted signing public key (<vault>.signing.pub); default: from the vault")
_TARGETS = [click.option("--inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
            click.option("--limit", multiple=True, help="only these devices (comma-separated, repeatable)"),
            click.option("--target", help="one device: dir:PATH or ssh://[user@]host[:port]/root"),
            click.option("--python", help="device python for --target (ssh default: python3)"),
            json_option()]


def _targets(func):
    for opt in reversed(_TARGETS):
        func = opt(func)
    return func


@click.group(cls=KeycamGroup)
def deploy() -> None:
    """Signed bundles, A/B slots on devices, health-checked installs, rollback."""


@deploy.command()
@click.argument("device")
@click.option("--version", "version", required=True, help="bundle version, e.g. 1.2.0")
@click.option("--min-version", default="0", show_default=True,
              help="after installing this bundle the device refuses anything older")
@click.option("--keyset", default="active", show_default=True, help="active, pending (after rotate), or a fingerprint")
@click.option("--hardware", multiple=True, help="compatible hardware (default: the device's)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="bundle file, or a directory for <device>-<version>.bundle")
@click.option("--canary-frames", type=click.IntRange(1, 500),
              help="health-check frames (default: all the vault keeps, made at provision/rotate)")
@click.option("--health-timeout", default=30.0, show_default=True, type=click.FloatRange(1, 3600))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="device config template (default: the one given at provisioning)")
@click.option("--mender", "mender_artifact", is_flag=True,
              help="also write a signed Mender artifact <device>-<version>.mender beside the bundle "
                   "(see deploy/MENDER.md)")
@json_option()
@vault_options
def build(device, version, min_version, keyset, hardware, out, canary_frames, health_timeout,
          config_path, mender_artifact, json_dest, **params) -> None:
    """Build DEVICE's signed bundle from the vault (model, sensor key and canary sealed to the device;
    with --mender also its Mender artifact).

    \b
    Example:
      keycam deploy build cam-01 --version 1.0.0 --out bundles/ --json
    """
    from deploy import builder  # host-only heavy imports (scipy)
    from deploy.payload import load_template
    template = load_template(config_path) if config_path else None
    if mender_artifact:
        from deploy import mender
        mender.require_tool()
    with edit_vault(params, migration_canary) as vault:
        path, manifest = builder.build(vault, device, version, out, min_version, keyset, list(hardware) or None,
                                       canary_frames, health_timeout_s=health_timeout, config=template)
        if mender_artifact:   # before any audit entry: a failure here leaves the vault and its log unchanged
            key = mender.mender_key(vault)
            artifact = mender.write_artifact(key, path, manifest)
        audit.record(vault, "bundle", device, version=version, key_fingerprint=manifest.keys["key_fingerprint"],
                     bundle=str(path))
        if mender_artifact:
            audit.record(vault, "mender-artifact", device, version=version, artifact=str(artifact),
                         key_id=key.key_id, key_created=key.created)
            pub = mender.export_public(params["vault_path"], key)
    click.echo(f"built {path}: {device} {version} (min {min_version}), key set "
               f"{manifest.keys['key_fingerprint'][:16]}, {len(manifest.files)} files, "
               f"signed by {manifest.signing_key_id}")
    if mender_artifact:
        click.echo(f"built {artifact}: Mender artifact {mender.artifact_name(manifest)}, module type "
                   f"{mender.MODULE_TYPE}, device types {', '.join(manifest.compatible)}, verify key {pub}")
    emit_json(json_dest, {"device_id": device, "version": version, "min_version": min_version,
                          "key_fingerprint": manifest.keys["key_fingerprint"], "bundle": str(path),
                          "files": sorted(manifest.files), "signing_key_id": manifest.signing_key_id,
                          "compatible": list(manifest.compatible),
                          "mender_artifact": str(artifact) if mender_artifact else None,
                          "mender_verify_key": str(pub) if mender_artifact else None})


@deploy.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_PUBKEY
@json_option()
@vault_options
def verify(bundle, pubkey, json_dest, **params) -> None:
    """Check BUNDLE's signature and every file's sha256 (nothing is unpacked).

    \b
    Example:
      keycam deploy verify bundles/cam-01-1.0.0.bundle --json
    """
    manifest = verify_bundle(bundle, _trusted(pubkey, params))
    lines = [f"OK {bundle}: device {manifest.device_id}, version {manifest.version} "
             f"(min {manifest.minimum_version}), hardware {', '.join(manifest.compatible)}, "
             f"{len(manifest.files)} files verified, signed by {manifest.signing_key_id}"]
    lines += [f"  {spec['sha256'][:16]} {spec['size']:>9}  {name}"
              f"{' (sealed to the device)' if name in manifest.secrets else ''}"
              for name, spec in sorted(manifest.files.items())]
    emit_result(json_dest, json.loads(manifest.to_bytes()), "\n".join(lines))


@deploy.command()
@_targets
@click.option("--bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="bundle for --target (its device id is taken from the manifest)")
@click.option("--bundles", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="directory of bundles: each device gets its newest one")
@click.option("--canary", default=0, show_default=True, type=click.IntRange(0),
              help="deploy to the first N devices first; stop if any of them fails")
@click.option("--dry-run", is_flag=True, help="verify bundles and ask devices, change nothing")
@click.option("--no-service", is_flag=True, help="do not restart/check the service (first flash)")
@_PUBKEY
@vault_options
def push(inventory, limit, target, python, json_dest, bundle, bundles, canary, dry_run, no_service, pubkey,
         **params) -> None:
    """Install bundles on devices (health-checked; each device rolls back on failure).

    \b
    Example:
      keycam deploy push --target dir:/media/sd/var/lib/keycam --bundle bundles/cam-01-1.0.0.bundle --no-service
      keycam deploy push --inventory fleet.yaml --bundles bundles/ --canary 1 --json
    """
    trusted = _trusted(pubkey, params)
    device = None
    if target is not None:
        if bundle is None:
            raise click.UsageError("--target needs --bundle")
        device = verify_bundle(bundle, trusted).device_id
    entries = _entries(inventory, limit, target, device, python)
    if bundle is not None:
        entries = [Entry(e.device_id, e.target, bundle, e.options) for e in entries]

    def confirm_in_vault(device_id: str, fingerprint: str) -> None:
        """A healthy install of a pending key set makes it the device's active one."""
        with edit_vault(params, migration_canary) as vault:
            if fingerprint:
                lifecycle.confirm(vault, device_id, fingerprint, by="deploy push")

    def progress(result: dict) -> None:
        if json_dest != JSON_STDOUT:
            click.echo(_result_line(result))

    try:
        results = fleet.push(entries, lambda e: fleet.find_bundle(e, bundles, trusted), trusted, canary,
                             dry_run, not no_service, None if pubkey or dry_run else confirm_in_vault, progress)
    except fleet.PushInterrupted as exc:
        emit_json(json_dest, exc.results)
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(130) from None
    emit_json(json_dest, results)
    failed = [r["device"] for r in results if not r["ok"]]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(results)} device(s) not deployed: {', '.join(failed)}")


def _each(entries: list[Entry], *agent_args: str) -> list[dict]:
    out = []
    for e in entries:
        t = e.transport()
        try:
            answer = t.agent(*agent_args)
        except KeycamError as exc:
            answer = {"ok": False, "error": str(exc)}
        out.append({"device": e.device_id or answer.get("device_id") or t.describe(), "target": t.describe(),
                    **answer})
    return out


def _reconcile(results: list[dict], params: dict) -> None:
    """A pending key set that a device reports committed becomes active in the vault (e.g. after a push
    was interrupted once the device had switched). Only with a vault and a passphrase given without a prompt."""
    if not params["vault_path"].is_file() or not (params.get("passphrase_file") or os.environ.get(PASSPHRASE_ENV)):
        return
    with edit_vault(params, migration_canary) as vault:
        for r in results:
            fp, device = r.get("key_fingerprint"), r.get("device_id")
            if r["ok"] and fp and device and lifecycle.confirm_running(vault, device, fp, by="deploy status"):
                click.echo(f"{device}: runs pending key set {fp[:16]}; now active in the vault", err=True)


def _status_line(r: dict) -> str:
    """One device's status for people: version, slots, minimum version, service state."""
    if not r["ok"]:
        return f"{r['device']:16} ERROR {r['error']}"
    slots = ", ".join(f"{s}={v['version'] or '-'}" for s, v in sorted(r["slots"].items()))
    return (f"{r['device_id']:16} version {r['version'] or '-'} slot {r['committed'] or '-'} "
            f"(current {r['current'] or '-'}; {slots}) min {r['min_version']} "
            f"service {'up' if r['service_up'] else 'down' if r['service_up'] is False else 'n/a'}")


@deploy.command()
@_targets
@vault_options
def status(inventory, limit, target, python, json_dest, **params) -> None:
    """Identity, committed/current slot, versions and service state of devices.

    With a vault (and its passphrase in a file or $KEYCAM_VAULT_PASSPHRASE) a pending key set that a
    device already runs is confirmed there.

    \b
    Example:
      keycam deploy status --inventory fleet.yaml --json
    """
    results = _each(_entries(inventory, limit, target, None, python), "status")
    _reconcile(results, params)
    emit_result(json_dest, results, "\n".join(_status_line(r) for r in results))
    if not all(r["ok"] for r in results):
        raise click.ClickException("some devices could not be queried")


@deploy.command()
@_targets
@click.option("--no-service", is_flag=True)
def rollback(inventory, limit, target, python, json_dest, no_service) -> None:
    """Switch devices back to their previous slot (health-checked).

    \b
    Example:
      keycam deploy rollback --inventory fleet.yaml --limit cam-01
    """
    args = ("rollback",) + (("--no-service",) if no_service else ())
    results = _each(_entries(inventory, limit, target, None, python), *args)
    emit_result(json_dest, results, "\n".join(
        f"{r['device']:16} " + (f"now on slot {r['committed']} version {r['version']}" if r["ok"]
                                else f"FAILED {r.get('error') or r.get('reason')}") for r in results))
    if not all(r["ok"] for r in results):
        raise click.ClickException("rollback failed on some devices")
