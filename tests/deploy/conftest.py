"""Fixtures for the deploy tests: one provisioned vault, three bundles, an installed device root."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from deploy import builder
from keycam.keys_cli import keys
from keys.vault import Vault
from tests.kits.deploy import PASSPHRASE, Sshd, base_model, deploy, local, service, write_agent_config

DEVICE = "cam-01"


def run_keys(v: SimpleNamespace, *args: str) -> str:
    result = CliRunner().invoke(keys, [*args, "--vault", str(v.path), "--passphrase-file", str(v.passfile)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="session")
def fleet_vault(tmp_path_factory) -> SimpleNamespace:
    """A vault with cam-01 provisioned (stem profile, no faceplate: its bundles carry a sealed sensor key)."""
    d = tmp_path_factory.mktemp("vault")
    model, dataset = base_model()
    v = SimpleNamespace(dir=d, path=d / "vault.kcv", passfile=d / "pass", model=model, dataset=dataset)
    v.passfile.write_text(PASSPHRASE + "\n")
    run_keys(v, "init")
    canary = ["--canary-dataset", dataset] if dataset else []
    run_keys(v, "provision", DEVICE, "--model", str(model), "--profile", "stem", "--no-faceplate",
             "--canary-frames", "8", *canary)
    v.vault = Vault.open(v.path, PASSPHRASE)
    v.signing_pub = (d / "vault.kcv.signing.pub").read_text().strip()
    return v


@pytest.fixture(scope="session")
def bundles(fleet_vault, tmp_path_factory) -> dict[str, Path]:
    """cam-01 bundles 1.0.0, 2.0.0 and 3.0.0 (3.0.0 sets minimum version 3.0.0: no way back)."""
    out = tmp_path_factory.mktemp("bundles")
    made = {}
    for version, minimum in (("1.0.0", "0"), ("2.0.0", "0"), ("3.0.0", "3.0.0")):
        path, _ = builder.build(fleet_vault.vault, DEVICE, version, out, minimum, canary_count=8)
        made[version] = path
    return made


@pytest.fixture(scope="session")
def template_root(fleet_vault, bundles, tmp_path_factory) -> Path:
    """A device root flashed like an SD card: `keys export` identity, then 1.0.0 installed."""
    root = tmp_path_factory.mktemp("template") / "root"
    run_keys(fleet_vault, "export", DEVICE, "--out", str(root))
    write_agent_config(root)
    answer = deploy(local(root), bundles["1.0.0"], "--no-service")
    assert answer["ok"], answer
    return root


@pytest.fixture
def device_root(template_root, tmp_path) -> Path:
    """A fresh copy of the template root with its service running on slot a (1.0.0)."""
    root = tmp_path / "device"
    shutil.copytree(template_root, root, symlinks=True)
    assert service(root, "restart") == 0
    yield root
    service(root, "stop")


@pytest.fixture
def small_tmpfs(tmp_path):
    """Factory for a size-limited tmpfs (needs root and a working mount); unmounted afterwards."""
    mounted = []

    def make(size_kib: int) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            pytest.skip(f"disk-full test needs a small tmpfs, but mount failed (root? container caps?): "
                        f"{proc.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield make
    for mnt in mounted:
        service(mnt / "device", "stop")
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("openssh-server is not installed (scripts/bootstrap.sh test installs it)")
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()
