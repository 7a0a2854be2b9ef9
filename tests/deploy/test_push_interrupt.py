"""Ctrl-C during `keycam deploy push`, at every step of the device's install (issue 16, defect 1).

The agent sends SIGINT to the push's whole process group at one step (KEYCAM_AGENT_INTERRUPT_AT), as a
Ctrl-C in the operator's terminal does. Whatever the step, the push must exit 130 saying what the
device runs, the vault must agree with the device, and pushing again must finish the job.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy.agent import INTERRUPT_ENV, STEPS, Agent
from keycam.deploy_cli import deploy
from keys.vault import Vault
from tests.kits.deploy import base_model

KEYCAM = str(Path(sys.executable).with_name("keycam"))
DEVICE = "cam-int"
pytestmark = pytest.mark.slow


def _keycam(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([KEYCAM, *args], env=env, capture_output=True, text=True, timeout=180,
                          start_new_session=True)     # its own process group: the SIGINT stays inside it
    if check:
        assert proc.returncode == 0, f"keycam {' '.join(args)}: {proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """A device running 1.0.0 and a vault whose new key set is pending, with bundle 2.0.0 built from it."""
    d = tmp_path_factory.mktemp("interrupt")
    model, dataset = base_model()
    env = {**os.environ, "KEYCAM_VAULT": str(d / "v.kcv"), "KEYCAM_VAULT_PASSPHRASE": "interrupt-pass"}
    canary = ["--canary-dataset", dataset] if dataset else []
    root, out = d / "device", d / "bundles"
    out.mkdir()
    _keycam(env, "keys", "init")
    _keycam(env, "keys", "provision", DEVICE, "--model", str(model), "--profile", "stem", "--no-faceplate", *canary)
    _keycam(env, "keys", "export", DEVICE, "--out", str(root))
    _keycam(env, "deploy", "build", DEVICE, "--version", "1.0.0", "--out", str(out))
    _keycam(env, "deploy", "push", "--target", f"dir:{root}", "--bundle", str(out / f"{DEVICE}-1.0.0.bundle"),
            "--no-service")
    _keycam(env, "keys", "rotate", DEVICE, *canary)
    _keycam(env, "deploy", "build", DEVICE, "--version", "2.0.0", "--keyset", "pending", "--out", str(out))
    return d, env, root, out / f"{DEVICE}-2.0.0.bundle"


def _keysets(env: dict) -> tuple[str, str | None]:
    """(active, pending) key fingerprints of the device in the vault."""
    vault = Vault.open(env["KEYCAM_VAULT"], env["KEYCAM_VAULT_PASSPHRASE"])
    states = {g.state: g.key_fingerprint for g in vault.device(DEVICE).generations}
    return states["active"], states.get("pending")


def _status(root: Path) -> dict:
    return Agent(root).status()


def _copy(rotated, tmp_path: Path) -> tuple[dict, Path, Path]:
    """A private copy of the rotated vault and device root: (environment, device root, bundle 2.0.0)."""
    src, base_env, src_root, bundle = rotated
    shutil.copy2(src / "v.kcv", tmp_path / "v.kcv")
    shutil.copytree(src_root, tmp_path / "device", symlinks=True)
    return {**base_env, "KEYCAM_VAULT": str(tmp_path / "v.kcv")}, tmp_path / "device", bundle


@pytest.mark.parametrize("step", STEPS)
def test_interrupted_push_ends_consistent_and_can_be_finished(rotated, tmp_path, step):
    env, root, bundle = _copy(rotated, tmp_path)
    old, new = _keysets(env)
    assert new is not None

    push = ["deploy", "push", "--target", f"dir:{root}", "--bundle", str(bundle), "--no-service"]
    proc = _keycam({**env, INTERRUPT_ENV: step}, *push, check=False)
    assert proc.returncode == 130, (proc.stdout, proc.stderr)
    assert "push interrupted" in proc.stderr and "Traceback" not in proc.stderr
    status = _status(root)
    switched = status["version"] == "2.0.0"
    assert switched == (step == "committed"), status        # only a committed install survives Ctrl-C
    assert ("after the device committed" if switched else "before the device switched") in proc.stderr
    assert _keysets(env) == ((new, None) if switched else (old, new))
    assert status["current"] == status["committed"]          # no half-switched slot left behind

    again = _keycam(env, *push)
    assert ("already installed" if switched else "installed") in again.stdout
    assert _keysets(env) == (new, None)
    assert _status(root)["version"] == "2.0.0"


def test_status_confirms_a_pending_key_set_the_device_runs(rotated, tmp_path):
    """A device that committed while the host lost track (SIGKILL after commit): `deploy status` reconciles."""
    env, root, bundle = _copy(rotated, tmp_path)
    old, new = _keysets(env)
    proc = _keycam({**env, "KEYCAM_AGENT_CRASH_AT": "committed"}, "deploy", "push", "--target", f"dir:{root}",
                   "--bundle", str(bundle), "--no-service", check=False)
    assert proc.returncode != 0 and _keysets(env) == (old, new)
    shown = CliRunner().invoke(deploy, ["status", "--target", f"dir:{root}"], env=env)
    assert shown.exit_code == 0 and "now active in the vault" in shown.output
    assert _keysets(env) == (new, None)
