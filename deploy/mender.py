"""Fleet roll-out through Mender: signed Mender artifacts that carry keycam bundles, the Mender
signing key kept in the vault, and the installer of the `keycam` update module on a device.

An artifact is a module-image of type `keycam` (Mender artifact format 3) whose one payload file is
the signed keycam bundle; its device types are the bundle's compatible hardware, its name
`<device>-<version>`. It is written and signed by Debian's `mender-artifact` CLI with an ECDSA P-256
key that lives in the vault (created on first use) and whose public half devices configure as
Mender's `ArtifactVerifyKey`. On the device the update module (deploy/update_module.py) hands the
bundle to keycam's A/B agent, so keycam's signature, device and downgrade rules still decide.

Device setup (the Pi install step; `keycam keys export --mender-rootfs` does the same on an SD card):
    python -m deploy.mender install-module --rootfs / --verify-key keycam-artifact-verify.pem
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from base.atomic import atomic_write
from base.errors import KeycamError
from deploy.device import DeviceRoot
from deploy.manifest import Manifest

MODULE_TYPE = "keycam"
ARTIFACT_SUFFIX = ".mender"
MENDER_ARTIFACT = "mender-artifact"
VAULT_ENTRY = "mender_signing"
DEVICE_ROOT = "/var/lib/keycam"
DEVICE_PYTHON = "/opt/keycam/.venv/bin/python"
MODULES_DIR = "/usr/share/mender/modules/v3"        # where the 3.x client looks (not configurable)
VERIFY_KEY = "/etc/mender/keycam-artifact-verify.pem"
MENDER_CONF = "/etc/mender/mender.conf"
DEVICE_TYPE_FILE = "/var/lib/mender/device_type"    # Debian: /var/lib/mender -> /data/mender
ARTIFACT_INFO = "/etc/mender/artifact_info"         # the client refuses to install without it
FACTORY_ARTIFACT = "keycam-factory"
_TOOL_TIMEOUT_S = 600


class MenderError(KeycamError):
    """A Mender artifact could not be written or the update module could not be installed."""


@dataclass(frozen=True)
class MenderKey:
    """The artifact-signing key pair (PEM): SEC1 private key for mender-artifact, SPKI public key."""
    private_pem: bytes
    public_pem: bytes
    key_id: str
    created: bool = False


def public_key_path(vault_path: Path) -> Path:
    """Where the public half is written beside the vault: <vault>.mender.pub."""
    return vault_path.with_name(vault_path.name + ".mender.pub")


def mender_key(vault) -> MenderKey:
    """The vault's Mender signing key, created on first use (the caller saves the vault)."""
    from base.clock import now_iso
    from keys.fields import b64d, b64e
    entry = vault.data.get(VAULT_ENTRY)
    created = entry is None
    if created:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        private = ec.generate_private_key(ec.SECP256R1())
        public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption())
        entry = {"alg": "ECDSA-P256", "private": b64e(private_pem), "public": b64e(public_pem),
                 "key_id": hashlib.sha256(public_pem).hexdigest()[:16], "created": now_iso()}
        vault.data[VAULT_ENTRY] = entry
    return MenderKey(b64d(entry["private"], "mender.private"), b64d(entry["public"], "mender.public"),
                     entry["key_id"], created)


def export_public(vault_path: Path, key: MenderKey) -> Path:
    """Write the public half beside the vault (what devices set as ArtifactVerifyKey)."""
    path = public_key_path(vault_path)
    if not path.exists() or path.read_bytes() != key.public_pem:
        atomic_write(path, key.public_pem, 0o644)
    return path


def artifact_name(manifest: Manifest) -> str:
    return f"{manifest.device_id}-{manifest.version}"


def require_tool() -> str:
    """The mender-artifact executable (checked before anything is built)."""
    tool = shutil.which(MENDER_ARTIFACT)
    if tool is None:
        raise MenderError("mender-artifact is not installed: apt-get install mender-artifact "
                          "(Debian bookworm ships 3.9), then rebuild with --mender")
    return tool


def write_artifact(key: MenderKey, bundle: Path, manifest: Manifest, out: Path | None = None) -> Path:
    """Write <bundle dir>/<device>-<version>.mender (or `out`): a module-image of type keycam carrying
    `bundle`, signed with `key`. Written atomically; returns its path."""
    bundle = Path(bundle)
    out = Path(out) if out is not None else bundle.with_name(artifact_name(manifest) + ARTIFACT_SUFFIX)
    tool = require_tool()
    tmp_out = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="keycam-mender-") as private_dir:   # mode 0700
        key_file = Path(private_dir) / "signing.pem"
        atomic_write(key_file, key.private_pem, 0o600)
        argv = [tool, "write", "module-image", "--type", MODULE_TYPE, "--artifact-name", artifact_name(manifest),
                "--software-name", MODULE_TYPE, "--software-version", manifest.version,
                "--file", str(bundle), "--key", str(key_file), "--output-path", str(tmp_out)]
        for hardware in manifest.compatible:
            argv += ["--device-type", hardware]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            tmp_out.unlink(missing_ok=True)
            raise MenderError(f"mender-artifact did not finish within {_TOOL_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        tmp_out.unlink(missing_ok=True)
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise MenderError(f"mender-artifact failed (exit {proc.returncode}): {detail[-1] if detail else ''}")
    os.replace(tmp_out, out)
    return out


# ---- device side: the update module and what Mender needs to trust our artifacts -----------------------
def launcher(python: str = DEVICE_PYTHON, device_root: str = DEVICE_ROOT) -> str:
    """The text of /usr/share/mender/modules/v3/keycam: runs deploy.update_module on the device's venv
    (from /, so nothing in Mender's working directory can shadow a module)."""
    return ("#!/bin/sh\n"
            "# Mender update module 'keycam' (protocol v3), installed by keycam: every state goes to\n"
            "# deploy.update_module, which drives keycam's A/B agent on the device root below.\n"
            f"cd / && exec {shlex.quote(python)} -m deploy.update_module --root {shlex.quote(device_root)} \"$@\"\n")


def _in_rootfs(rootfs: Path, path: str) -> Path:
    """`path` inside the file system mounted at `rootfs`, following absolute symlinks of its parent
    folders relative to rootfs (Debian links /var/lib/mender to /data/mender)."""
    current = rootfs
    for part in Path(path).relative_to("/").parts:
        candidate = current / part
        for _ in range(8):
            if not candidate.is_symlink():
                break
            target = os.readlink(candidate)
            candidate = rootfs / target.lstrip("/") if target.startswith("/") else candidate.parent / target
        current = candidate
    return current


def _merge_conf(conf: Path, settings: dict) -> None:
    """Set keys in a mender.conf (JSON), keeping everything else (server URL, tenant token)."""
    doc = {}
    if conf.exists():
        try:
            doc = json.loads(conf.read_text() or "{}")
        except (OSError, ValueError) as exc:
            raise MenderError(f"{conf} is not valid JSON ({exc}); fix or remove it, then install again") from exc
        if not isinstance(doc, dict):
            raise MenderError(f"{conf} must hold a JSON object")
    doc.update(settings)
    mode = conf.stat().st_mode & 0o777 if conf.exists() else 0o600
    conf.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(conf, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), mode)


def install_update_module(rootfs: Path, verify_key_pem: bytes, hardware: str, python: str = DEVICE_PYTHON,
                          device_root: str = DEVICE_ROOT) -> list[str]:
    """Install into the file system at `rootfs` (/ on the device, or a mounted SD card): the `keycam`
    update module, the artifact verify key (set as ArtifactVerifyKey in mender.conf), the Mender
    device type `hardware`, and where the image names no installed artifact yet, the factory name
    keycam-factory. Returns the paths written (as seen on the device)."""
    rootfs = Path(rootfs)
    if not rootfs.is_dir():
        raise MenderError(f"root file system {rootfs} is not a directory")
    if b"-----BEGIN PUBLIC KEY-----" not in verify_key_pem:
        raise MenderError("the Mender verify key must be a PEM public key (<vault>.mender.pub)")
    type_file = _in_rootfs(rootfs, DEVICE_TYPE_FILE)
    if type_file.exists():
        have = type_file.read_text().strip()
        if have != f"device_type={hardware}":
            raise MenderError(f"{type_file} says {have!r}, but this device's keycam artifacts are built for "
                              f"device type {hardware!r}: provision the device with --hardware matching the "
                              "Mender device type, or change the file")
    module = _in_rootfs(rootfs, f"{MODULES_DIR}/{MODULE_TYPE}")
    module.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(module, launcher(python, device_root).encode(), 0o755)
    key = _in_rootfs(rootfs, VERIFY_KEY)
    key.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(key, verify_key_pem, 0o644)
    _merge_conf(_in_rootfs(rootfs, MENDER_CONF), {"ArtifactVerifyKey": VERIFY_KEY})
    type_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(type_file, f"device_type={hardware}\n".encode(), 0o644)
    written = [f"{MODULES_DIR}/{MODULE_TYPE}", VERIFY_KEY, MENDER_CONF, DEVICE_TYPE_FILE]
    info = _in_rootfs(rootfs, ARTIFACT_INFO)
    if not info.exists():
        atomic_write(info, f"artifact_name={FACTORY_ARTIFACT}\n".encode(), 0o644)
        written.append(ARTIFACT_INFO)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.mender", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    inst = sub.add_parser("install-module", help="install the keycam update module and Mender's verify key")
    inst.add_argument("--rootfs", default="/", help="root of the device's file system (default /)")
    inst.add_argument("--verify-key", required=True, help="the vault's <vault>.mender.pub")
    inst.add_argument("--root", default=DEVICE_ROOT, help="keycam device root as seen on the device")
    inst.add_argument("--python", default=DEVICE_PYTHON, help="the device's keycam python")
    args = p.parse_args(argv)
    rootfs = Path(args.rootfs)
    try:
        hardware = DeviceRoot(_in_rootfs(rootfs, args.root)).identity()["hardware"]
        written = install_update_module(rootfs, Path(args.verify_key).read_bytes(), hardware, args.python, args.root)
    except (KeycamError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"installed under {rootfs}: {', '.join(written)} (device type {hardware})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
