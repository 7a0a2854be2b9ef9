"""Fleet roll-out through Mender with the real Debian client (mender 3.4, standalone) and
mender-artifact 3.9: `keycam deploy build --mender` artifacts, the `keycam` update module driving
the A/B agent, and every refusal leaving the committed slot running unchanged.

The 3.4 client reads its update modules from /usr/share/mender/modules/v3 and the factory artifact
name from /etc/mender (neither is configurable), so each `mender` run happens in a private mount
namespace (unshare -m, root) where a temp device file system is bound over those two folders; the
host's files are never touched. Its data store is the temp /var/lib/mender (--data).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from base.signing import raw_public
from deploy import mender
from deploy.bundle import read_manifest
from deploy.device import DeviceRoot
from deploy.health import load_canary, save_canary
from keycam.deploy_cli import deploy as deploy_cli
from keys.sealing import ROLE_CANARY, context_for, seal, unseal
from keys.vault import Vault
from tests.kits.deploy import (
    PASSPHRASE,
    REPO,
    assert_still_running,
    init_root,
    rebundle,
    service,
    snapshot,
    vault_public_hex,
)

DEVICE = "cam-01"
FACTORY = mender.FACTORY_ARTIFACT
MODULES = "/usr/share/mender/modules/v3"
ETC = "/etc/mender"
TIMEOUT_S = 180

# Binds the temp file system's module folder and /etc/mender over the real ones, then runs mender.
_NAMESPACE = (f'mount --bind "$ROOTFS{MODULES}" {MODULES} && mount --bind "$ROOTFS{ETC}" {ETC} && '
              'exec mender --no-syslog --data "$ROOTFS/var/lib/mender" '
              '--fallback-config "$ROOTFS/var/lib/mender/mender.conf" "$@"')


@pytest.fixture(scope="module")
def tools() -> None:
    for tool, pkg in (("mender", "mender-client"), ("mender-artifact", "mender-artifact")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install {pkg}; scripts/bootstrap.sh test does)")
    if not (Path(MODULES).is_dir() and Path(ETC).is_dir()):
        pytest.fail(f"{MODULES} or {ETC} is missing: reinstall mender-client")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {ETC} {ETC}"], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"the Mender tests need a private mount namespace (root): {probe.stderr.strip()}")


@dataclasses.dataclass
class Artifacts:
    good: Path          # 2.0.0, built by `keycam deploy build --mender`
    older: Path         # 1.0.0 (the version the device runs)
    pub: Path           # <vault>.mender.pub
    key: mender.MenderKey
    unhealthy: Path     # 2.0.0 whose canary labels are wrong: the health check fails
    wrong_type: Path    # 2.0.0 for device type rpi5
    wrong_key: Path     # 2.0.0 signed with another Mender key
    tampered: Path      # `good` with one bit of its payload flipped


def _flip_payload_bit(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    with tarfile.open(src) as tar:
        member = tar.getmember("data/0000.tar.gz")
    data[member.offset_data + member.size // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def artifacts(tools, fleet_vault, bundles, template_root, tmp_path_factory) -> Artifacts:
    out = tmp_path_factory.mktemp("mender")
    args = ["build", DEVICE, "--version", "2.0.0", "--mender", "--out", str(out), "--canary-frames", "8",
            "--vault", str(fleet_vault.path), "--passphrase-file", str(fleet_vault.passfile)]
    result = CliRunner().invoke(deploy_cli, args)
    assert result.exit_code == 0, result.output
    good = out / f"{DEVICE}-2.0.0.mender"
    assert f"built {good}" in result.output
    key = mender.mender_key(Vault.open(fleet_vault.path, PASSPHRASE))
    assert not key.created, "the key made by `deploy build --mender` must be saved in the vault"
    bundle = out / f"{DEVICE}-2.0.0.bundle"
    trusted = bytes.fromhex(vault_public_hex(fleet_vault.vault))
    manifest = read_manifest(bundle, trusted)

    device_key = DeviceRoot(template_root).device_key()
    canary = context_for(DEVICE, ROLE_CANARY)

    def wrong_labels(payload):     # the canary is sealed to the device: open, change, seal again
        frames, expected = load_canary(unseal(device_key, payload["canary.npz"], canary))
        payload["canary.npz"] = seal(raw_public(device_key), save_canary(frames, (expected + 1) % 10), canary)

    sick = out / "sick" / f"{DEVICE}-2.0.0.bundle"
    sick.parent.mkdir()
    rebundle(bundle, sick, fleet_vault.vault, edit_payload=wrong_labels)
    other_key = mender.mender_key(SimpleNamespace(data={}))
    return Artifacts(
        good=good, pub=mender.public_key_path(fleet_vault.path), key=key,
        older=mender.write_artifact(key, bundles["1.0.0"], read_manifest(bundles["1.0.0"], trusted),
                                    out / "older.mender"),
        unhealthy=mender.write_artifact(key, sick, manifest, out / "unhealthy.mender"),
        wrong_type=mender.write_artifact(key, bundle, dataclasses.replace(manifest, compatible=["rpi5"]),
                                         out / "rpi5.mender"),
        wrong_key=mender.write_artifact(other_key, bundle, manifest, out / "other-key.mender"),
        tampered=_flip_payload_bit(good, out / "tampered.mender"))


class Client:
    """The real mender client, standalone, on a temp device file system set up by the installer."""

    def __init__(self, rootfs: Path, device_root: Path, verify_key: Path):
        self.rootfs = rootfs
        rootfs.mkdir()
        written = mender.install_update_module(rootfs, verify_key.read_bytes(), "rpi4", python=sys.executable,
                                               device_root=str(device_root))
        assert set(written) == {f"{MODULES}/keycam", mender.VERIFY_KEY, mender.MENDER_CONF,
                                mender.DEVICE_TYPE_FILE, mender.ARTIFACT_INFO}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "ROOTFS": str(self.rootfs), "PYTHONPATH": str(REPO)}
        return subprocess.run(["unshare", "-m", "sh", "-c", _NAMESPACE, "mender", *args], env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)

    def artifact(self) -> str:
        proc = self.run("show-artifact")
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()


@pytest.fixture
def client(artifacts, device_root, tmp_path) -> Client:
    return Client(tmp_path / "rootfs", device_root, artifacts.pub)


def _state(root: Path) -> dict:
    return json.loads((root / "state.json").read_text())


def test_artifact_validates_and_describes_the_bundle(artifacts, fleet_vault, tmp_path):
    ok = subprocess.run(["mender-artifact", "validate", "-k", str(artifacts.pub), str(artifacts.good)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert artifacts.pub.read_bytes() == artifacts.key.public_pem
    bad = subprocess.run(["mender-artifact", "validate", "-k", str(artifacts.pub), str(artifacts.wrong_key)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    info = subprocess.run(["mender-artifact", "read", str(artifacts.good)], capture_output=True, text=True,
                          timeout=60).stdout
    assert f"Name: {DEVICE}-2.0.0" in info and "Type:   keycam" in info and "[rpi4]" in info
    assert "rootfs-image.keycam.version: 2.0.0" in info and f"name:     {DEVICE}-2.0.0.bundle" in info
    records = [json.loads(line) for line in Path(f"{fleet_vault.path}.audit.jsonl").read_text().splitlines()]
    assert any(r["action"] == "mender-artifact" and r["details"]["key_id"] == artifacts.key.key_id
               for r in records)


@pytest.mark.slow
def test_install_then_commit_runs_the_new_slot(client, artifacts, device_root):
    assert client.artifact() == FACTORY
    install = client.run("install", str(artifacts.good))
    assert install.returncode == 0, install.stderr
    assert "installed 2.0.0 into slot b" in install.stderr + install.stdout
    commit = client.run("commit")
    assert commit.returncode == 0, commit.stderr
    assert client.artifact() == f"{DEVICE}-2.0.0"
    state = _state(device_root)
    assert (state["committed"], state["version"], state["previous"]) == ("b", "2.0.0", "a")
    assert os.readlink(device_root / "slots" / "current") == "b" and service(device_root, "status") == 0
    older = client.run("install", str(artifacts.older))
    assert older.returncode != 0 and "not newer than the installed 2.0.0" in older.stderr, \
        "keycam's downgrade rule still decides under Mender"


def test_failing_health_check_at_install_keeps_the_previous_slot(client, artifacts, device_root):
    snap = snapshot(device_root)
    install = client.run("install", str(artifacts.unhealthy))
    assert install.returncode != 0
    assert "canary frames" in install.stderr and "back on slot a" in install.stderr
    assert client.run("commit").returncode == 2, "nothing may be left to commit"
    assert client.artifact() == FACTORY
    assert_still_running(device_root, snap)


@pytest.mark.slow
def test_failing_health_check_at_commit_rolls_back(client, artifacts, device_root):
    snap = snapshot(device_root)
    assert client.run("install", str(artifacts.good)).returncode == 0
    service(device_root, "stop")                     # the new slot's service dies before the commit
    commit = client.run("commit")
    assert commit.returncode != 0 and "health check of slot b (2.0.0) failed" in commit.stderr
    assert "rolled back from 2.0.0 to 1.0.0 in slot a" in commit.stderr + commit.stdout
    assert client.artifact() == FACTORY
    assert_still_running(device_root, snap)


@pytest.mark.slow
def test_standalone_rollback_returns_to_the_previous_slot(client, artifacts, device_root):
    snap = snapshot(device_root)
    assert client.run("install", str(artifacts.good)).returncode == 0
    rollback = client.run("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert client.artifact() == FACTORY
    assert_still_running(device_root, snap)


@pytest.mark.parametrize("case, why", [
    ("tampered", "checksum"),
    ("wrong_type", "not compatible with device"),
    ("wrong_key", "verification"),
])
def test_refused_artifacts_never_reach_the_agent(client, artifacts, device_root, case, why):
    snap = snapshot(device_root)
    history = len(_state(device_root)["history"])
    install = client.run("install", str(getattr(artifacts, case)))
    assert install.returncode != 0
    assert why in install.stderr.lower(), install.stderr
    assert "keycam ArtifactInstall" not in install.stderr + install.stdout
    assert not (device_root / "slots" / "b").exists() and len(_state(device_root)["history"]) == history
    assert client.artifact() == FACTORY
    assert_still_running(device_root, snap)


def test_installer_keeps_mender_settings_and_checks_the_device_type(artifacts, tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc" / "mender").mkdir(parents=True)
    (rootfs / "data" / "mender").mkdir(parents=True)
    (rootfs / "var" / "lib").mkdir(parents=True)
    (rootfs / "var" / "lib" / "mender").symlink_to("/data/mender")     # Debian's layout
    conf = rootfs / "etc" / "mender" / "mender.conf"
    conf.write_text(json.dumps({"ServerURL": "https://hosted.mender.io", "TenantToken": "t"}))
    conf.chmod(0o600)
    (rootfs / "etc" / "mender" / "artifact_info").write_text("artifact_name=pi-image-7\n")
    written = mender.install_update_module(rootfs, artifacts.pub.read_bytes(), "rpi4")
    assert mender.ARTIFACT_INFO not in written, "the image's own artifact name is kept"
    assert (rootfs / "etc" / "mender" / "artifact_info").read_text() == "artifact_name=pi-image-7\n"
    doc = json.loads(conf.read_text())
    assert doc == {"ServerURL": "https://hosted.mender.io", "TenantToken": "t",
                   "ArtifactVerifyKey": mender.VERIFY_KEY}
    assert conf.stat().st_mode & 0o777 == 0o600
    assert (rootfs / "data" / "mender" / "device_type").read_text() == "device_type=rpi4\n"
    module = rootfs / MODULES.lstrip("/") / "keycam"
    assert os.access(module, os.X_OK) and "/var/lib/keycam" in module.read_text()
    with pytest.raises(mender.MenderError, match="device type 'rpi5'"):
        mender.install_update_module(rootfs, artifacts.pub.read_bytes(), "rpi5")
    with pytest.raises(mender.MenderError, match="PEM public key"):
        mender.install_update_module(rootfs, b"not a key", "rpi4")


def test_update_module_answers_queries_and_ignores_unknown_states(tmp_path):
    def module(*args):
        return subprocess.run([sys.executable, "-m", "deploy.update_module", "--root", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
    assert module("SupportsRollback").stdout == "Yes\n"
    assert module("NeedsArtifactReboot").stdout == "No\n"
    unknown = module("SomeFutureState", str(tmp_path))
    assert unknown.returncode == 0 and unknown.stdout == ""


def test_update_module_imports_no_host_code():
    code = ("import sys, deploy.update_module; "
            "device_keys = ('keys', 'keys.sealing', 'keys.keystore', 'keys.device_files'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tools', 'torch', 'scipy') "
            "or (m.startswith('keys') and m not in device_keys)]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_module_command_reads_the_device_type_from_the_identity(artifacts, fleet_vault, tmp_path, capsys):
    rootfs = tmp_path / "card"
    init_root(rootfs / "var" / "lib" / "keycam", DEVICE, fleet_vault.signing_pub, hardware="rpi5")
    assert mender.main(["install-module", "--rootfs", str(rootfs), "--verify-key", str(artifacts.pub)]) == 0
    assert "(device type rpi5)" in capsys.readouterr().out
    assert (rootfs / "var" / "lib" / "mender" / "device_type").read_text() == "device_type=rpi5\n"
    assert (rootfs / "etc" / "mender" / "keycam-artifact-verify.pem").read_bytes() == artifacts.pub.read_bytes()
    assert mender.main(["install-module", "--rootfs", str(tmp_path / "blank"), "--verify-key",
                        str(artifacts.pub)]) == 1
    assert "not a provisioned keycam device root" in capsys.readouterr().err
