"""Helpers for the deploy tests: a loopback sshd, bundle re-signing, device-root checks."""
from __future__ import annotations

import getpass
import json
import os
import shlex
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

from deploy.bundle import read_manifest, write_bundle
from deploy.device import DeviceRoot, tree_digest
from deploy.manifest import MANIFEST, SIGNATURE
from deploy.transport import DirTransport, Transport
from tests.kits.net import free_port

REPO = Path(__file__).resolve().parents[2]
SERVICE = Path(__file__).with_name("fake_service.sh")
SSHD = "/usr/sbin/sshd"
PASSPHRASE = "deploy-tests-passphrase"


def base_model() -> tuple[Path, str | None]:
    """The shipped base model and the dataset its canary frames come from."""
    fashion = REPO / "tools" / "models" / "lenet_fashion.onnx"
    if fashion.exists():
        return fashion, None
    return REPO / "tools" / "models" / "lenet_mnist.onnx", "mnist"


def rebundle(src: Path, out: Path, vault, edit_payload=None, **manifest_changes) -> Path:
    """Re-sign a copy of a bundle with the vault's key after changing manifest fields / payload files."""
    manifest = read_manifest(src, bytes.fromhex(vault_public_hex(vault)))
    with tarfile.open(src) as tar:
        payload = {m.name: tar.extractfile(m).read() for m in tar if m.name not in (MANIFEST, SIGNATURE)}
    for key, value in manifest_changes.items():
        setattr(manifest, key, value)
    if edit_payload is not None:
        edit_payload(payload)
    write_bundle(out, manifest, payload, vault.signing_private())
    return out


def vault_public_hex(vault) -> str:
    import base64
    return base64.b64decode(vault.data["signing"]["public"]).hex()


def write_agent_config(root: Path, start_timeout_s: float = 3.0) -> None:
    (root / "agent.yaml").write_text(yaml.safe_dump({
        "service": {"restart": [str(SERVICE), "restart"], "is_active": [str(SERVICE), "status"],
                    "start_timeout_s": start_timeout_s},
        "health": {"timeout_s": 60}}))


def service(root: Path, action: str) -> int:
    return subprocess.run([str(SERVICE), action], env={**os.environ, "KEYCAM_ROOT": str(root)},
                          capture_output=True, timeout=10).returncode


def deploy(transport: Transport, bundle: Path, *install_args: str) -> dict:
    """Upload and install like `deploy push` does; return the agent's answer."""
    up = transport.upload(bundle)
    assert up["ok"], up
    return transport.agent("install", up["path"], *install_args)


def snapshot(root: Path) -> dict:
    """What must not change across a failed deploy: committed slot, its version and its file tree."""
    state = json.loads((root / "state.json").read_text())
    slot = state["committed"]
    return {"slot": slot, "version": state["version"], "digest": tree_digest(root / "slots" / slot)}


def assert_still_running(root: Path, snap: dict) -> None:
    """The previously committed slot is the running one and none of its files changed."""
    state = json.loads((root / "state.json").read_text())
    assert state["committed"] == snap["slot"] and state["version"] == snap["version"]
    assert state["trying"] is None
    assert os.readlink(root / "slots" / "current") == snap["slot"]
    assert tree_digest(root / "slots" / snap["slot"]) == snap["digest"]
    assert service(root, "status") == 0, "the service is not running the committed slot"


def local(root: Path, **env: str) -> DirTransport:
    return DirTransport(root=str(root), env=dict(env), timeout_s=120)


class Sshd:
    """A throwaway sshd on 127.0.0.1 for the current user, with its own host key and user key."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = workdir / "host_ed25519"
        self.user_key = workdir / "user_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Sshd:
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        (self.dir / "authorized_keys").write_text(Path(f"{self.user_key}.pub").read_text())
        host_pub = " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}", f"PidFile {self.dir / 'sshd.pid'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "LogLevel ERROR", ""]))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # privilege-separation dir
        self.log = open(self.dir / "sshd.log", "wb")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.log.close()

    def target(self, root: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{root}"

    def options(self) -> dict:
        """Inventory options for this sshd (the agent runs with this venv's python)."""
        python = self.dir / "python"          # the agent code under test, not an installed copy
        if not python.exists():
            python.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} "
                              f"exec {shlex.quote(sys.executable)} \"$@\"\n")
            python.chmod(0o755)
        return {"identity_file": str(self.user_key), "known_hosts": str(self.known_hosts), "python": str(python)}


def init_root(root: Path, device_id: str, signing_pub: str, device_key: bytes | None = None,
              hardware: str = "rpi4") -> DeviceRoot:
    dev = DeviceRoot(root)
    root.mkdir(parents=True, exist_ok=True)
    dev.init_identity(device_id, hardware, signing_pub, device_key)
    return dev
