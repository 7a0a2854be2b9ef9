"""The device agent over the dir: transport: a good install, and every fault leaves the committed slot
running and byte-for-byte unchanged."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile

import numpy as np
import pytest

from base.signing import raw_public
from deploy.agent import STEPS, Agent
from deploy.device import DeviceRoot, tree_digest
from deploy.health import load_canary, save_canary
from keys.sealing import ROLE_CANARY, ROLE_MODEL, ROLE_SENSOR_KEY, context_for, is_sealed, seal, unseal
from tests.kits.deploy import assert_still_running, deploy, init_root, local, rebundle, service, snapshot

CANARY_CONTEXT = context_for("cam-01", ROLE_CANARY)


def test_install_switches_slot_and_commits(device_root, bundles, fleet_vault):
    answer = deploy(local(device_root), bundles["2.0.0"])
    assert answer["ok"] and answer["committed"] == "b", answer
    assert answer["health"]["correct"] == answer["health"]["total"] == 8
    assert os.readlink(device_root / "slots" / "current") == "b"
    assert service(device_root, "status") == 0
    status = local(device_root).agent("status")
    assert (status["version"], status["previous"], status["slots"]["a"]["version"]) == ("2.0.0", "a", "1.0.0")
    assert not list((device_root / "incoming").iterdir()), "the upload must be removed after install"
    # the sensor key, the model and the canary stay sealed to this device in the slot (0600)
    gen = fleet_vault.vault.device("cam-01").generation()
    sensor = gen.key_set().sensor.to_bytes()
    key = DeviceRoot(device_root).device_key()
    for name, role in (("sensor.key", ROLE_SENSOR_KEY), ("model.tflite", ROLE_MODEL), ("canary.npz", ROLE_CANARY)):
        path = device_root / "slots" / "b" / name
        assert is_sealed(path.read_bytes()) and (path.stat().st_mode & 0o777) == 0o600
        unseal(key, path.read_bytes(), context_for("cam-01", role))        # opens with this device's key
    assert unseal(key, (device_root / "slots" / "b" / "sensor.key").read_bytes(),
                  context_for("cam-01", ROLE_SENSOR_KEY)) == sensor
    with open(bundles["2.0.0"], "rb") as fh:
        assert sensor not in fh.read(), "the bundle must not carry the sensor key in clear"


def test_bundle_sealed_to_another_device_key_is_refused(template_root, bundles, fleet_vault, tmp_path):
    """A device whose key pair is not the one the vault sealed to: refused before unpacking, with cause and fix."""
    root = tmp_path / "other-card"
    init_root(root, "cam-01", fleet_vault.signing_pub)               # same device id, a fresh key pair
    answer = deploy(local(root), bundles["1.0.0"], "--no-service")
    assert not answer["ok"], answer
    assert "sealed to device key" in answer["error"] and "--new-device-key" in answer["error"]
    assert not (root / "slots" / "a").exists(), "nothing is unpacked for a bundle this device cannot open"


def test_signed_bundle_with_an_altered_sealed_file_is_refused(device_root, bundles, fleet_vault, tmp_path):
    """Signed by the vault but a sealed file does not open: refused before the switch, slot unchanged."""
    snap = snapshot(device_root)

    def flip(payload):
        model = bytearray(payload["model.tflite"])
        model[-100] ^= 0x01
        payload["model.tflite"] = bytes(model)

    bad = rebundle(bundles["2.0.0"], tmp_path / "altered.bundle", fleet_vault.vault, edit_payload=flip)
    answer = deploy(local(device_root), bad)
    assert not answer["ok"] and "bundle file model.tflite" in answer["error"] and "altered" in answer["error"]
    assert_still_running(device_root, snap)


def test_rollback_returns_to_previous_slot(device_root, bundles):
    assert deploy(local(device_root), bundles["2.0.0"])["ok"]
    answer = local(device_root).agent("rollback")
    assert answer["ok"] and answer["committed"] == "a" and answer["version"] == "1.0.0"
    assert os.readlink(device_root / "slots" / "current") == "a" and service(device_root, "status") == 0


def test_tampered_bundle_is_refused_before_unpacking(device_root, bundles, tmp_path):
    snap = snapshot(device_root)
    data = bytearray(bundles["2.0.0"].read_bytes())
    with tarfile.open(bundles["2.0.0"]) as tar:
        data[tar.getmember("model.tflite").offset_data + 1000] ^= 0x01   # one bit of the model
    bad = tmp_path / "tampered.bundle"
    bad.write_bytes(bytes(data))
    answer = deploy(local(device_root), bad)
    assert not answer["ok"] and "sha256" in answer["error"]
    assert not (device_root / "slots" / "b").exists(), "nothing may be unpacked from a bad bundle"
    assert_still_running(device_root, snap)


def test_bad_signature_is_refused(device_root, bundles, fleet_vault, tmp_path):
    snap = snapshot(device_root)
    data = bundles["2.0.0"].read_bytes()
    forged = tmp_path / "forged.bundle"
    forged.write_bytes(data.replace(b'"version": "2.0.0"', b'"version": "9.0.0"', 1))
    answer = deploy(local(device_root), forged)
    assert not answer["ok"] and "bad bundle signature" in answer["error"]
    assert not (device_root / "slots" / "b").exists()
    assert_still_running(device_root, snap)


def test_wrong_device_is_refused(device_root, bundles, fleet_vault, tmp_path):
    snap = snapshot(device_root)
    other = rebundle(bundles["2.0.0"], tmp_path / "other.bundle", fleet_vault.vault, device_id="cam-99")
    answer = deploy(local(device_root), other)
    assert not answer["ok"] and "for device 'cam-99'" in answer["error"]
    hw = rebundle(bundles["2.0.0"], tmp_path / "hw.bundle", fleet_vault.vault, compatible=["jetson"])
    answer = deploy(local(device_root), hw)
    assert not answer["ok"] and "hardware" in answer["error"]
    assert_still_running(device_root, snap)


def test_downgrade_and_minimum_version_are_refused(device_root, bundles, fleet_vault, tmp_path):
    assert deploy(local(device_root), bundles["3.0.0"])["ok"]   # raises the floor to 3.0.0
    snap = snapshot(device_root)
    answer = deploy(local(device_root), bundles["2.0.0"])
    assert not answer["ok"] and "minimum version 3.0.0" in answer["error"]
    same = deploy(local(device_root), bundles["3.0.0"])     # the committed bundle again: nothing to do
    assert same["ok"] and same["already_installed"] and same["version"] == "3.0.0"
    resigned = rebundle(bundles["3.0.0"], tmp_path / "resigned.bundle", fleet_vault.vault, created="another day")
    other = deploy(local(device_root), resigned)              # same version, other contents
    assert not other["ok"] and "not newer" in other["error"]
    rb = local(device_root).agent("rollback")
    assert not rb["ok"] and "below the minimum version" in rb["error"]
    assert_still_running(device_root, snap)


def test_truncated_upload_is_rejected(device_root, bundles):
    snap = snapshot(device_root)
    data = bundles["2.0.0"].read_bytes()
    t = local(device_root)
    answer = t.agent("receive", "--sha256", hashlib.sha256(data).hexdigest(), "--size", str(len(data)),
                     stdin=data[: len(data) // 2])
    assert not answer["ok"] and f"received {len(data) // 2} of {len(data)}" in answer["error"]
    assert not list((device_root / "incoming").iterdir()), "a partial upload must not be kept"
    # a truncated bundle that reaches install anyway is refused by verification
    cut = device_root / "incoming" / "cut.bundle"
    cut.write_bytes(data[: len(data) // 2])
    answer = t.agent("install", str(cut))
    assert not answer["ok"] and ("truncated" in answer["error"] or "missing" in answer["error"])
    assert_still_running(device_root, snap)


def test_disk_full_while_unpacking(small_tmpfs, template_root, bundles, fleet_vault, tmp_path):
    slot_bytes = sum(f.stat().st_size for f in (template_root / "slots" / "a").iterdir())
    pad = os.urandom(2 * 1024 * 1024)
    big = rebundle(bundles["2.0.0"], tmp_path / "big.bundle", fleet_vault.vault,
                   edit_payload=lambda p: p.update({"padding.bin": pad}))
    # room for the installed slot, the export files and the upload, but not for unpacking it too
    size_kib = (2 * slot_bytes + big.stat().st_size + len(pad) // 2) // 1024
    root = small_tmpfs(size_kib) / "device"
    shutil.copytree(template_root, root, symlinks=True)
    assert service(root, "restart") == 0
    snap = snapshot(root)
    answer = deploy(local(root), big)
    assert not answer["ok"] and "disk is full while unpacking" in answer["error"], answer
    assert not (root / "slots" / "b").exists(), "a half-unpacked slot must be removed"
    assert_still_running(root, snap)
    assert deploy(local(root), bundles["2.0.0"])["ok"], "after the failure a normal bundle still installs"


@pytest.mark.parametrize("step", STEPS)
def test_agent_killed_at_each_step(device_root, bundles, step):
    snap = snapshot(device_root)
    t = local(device_root)
    up = t.upload(bundles["2.0.0"])
    crashing = local(device_root, KEYCAM_AGENT_CRASH_AT=step)
    with pytest.raises(Exception, match="killed by signal 9"):
        crashing.agent("install", up["path"])
    state = json.loads((device_root / "state.json").read_text())
    assert state["committed"] == ("b" if step == "committed" else "a")   # killed once committed: it stays
    recovered = t.agent("recover", "--no-service")   # what the boot hook runs before the service starts
    assert recovered["ok"]
    assert service(device_root, "restart") == 0      # then the service (re)starts
    assert recovered["recovered"] == (step in ("marked", "switched", "restarted", "checked"))
    if step != "committed":
        assert_still_running(device_root, snap)
    again = deploy(t, bundles["2.0.0"])
    assert again["ok"] and bool(again.get("already_installed")) == (step == "committed"), \
        "the interrupted update can be retried (or is reported as already installed)"


def test_failing_health_check_service_down(device_root, bundles):
    snap = snapshot(device_root)
    (device_root / "fail_start").touch()
    answer = deploy(local(device_root), bundles["2.0.0"])
    assert not answer["ok"] and answer["rolled_back_to"] == "a"
    assert "service is not up" in answer["reason"]
    (device_root / "fail_start").unlink()
    assert service(device_root, "restart") == 0
    assert_still_running(device_root, snap)


def test_failing_health_check_canary_misclassified(device_root, bundles, fleet_vault, tmp_path):
    snap = snapshot(device_root)

    key = DeviceRoot(device_root).device_key()

    def wrong_labels(payload):
        frames, expected = load_canary(unseal(key, payload["canary.npz"], CANARY_CONTEXT))
        payload["canary.npz"] = seal(raw_public(key), save_canary(frames, (expected + 1) % 10), CANARY_CONTEXT)

    bad = rebundle(bundles["2.0.0"], tmp_path / "bad.bundle", fleet_vault.vault, edit_payload=wrong_labels)
    answer = deploy(local(device_root), bad)
    assert not answer["ok"] and answer["rolled_back_to"] == "a"
    assert answer["health"]["correct"] == 0 and answer["health"]["service"] == "up"
    assert_still_running(device_root, snap)
    b = device_root / "slots" / "b"
    assert tree_digest(b) is not None, "the failed slot stays for inspection, inactive"


def test_canary_frames_are_keyed(bundles, fleet_vault, template_root):
    """The canary frames in a bundle are keyed sensor output, not plain images (sealed: they pair
    public images with their keyed frames, which would help solve the sensor key)."""
    with tarfile.open(bundles["1.0.0"]) as tar:
        blob = tar.extractfile("canary.npz").read()
    frames, _ = load_canary(unseal(DeviceRoot(template_root).device_key(), blob, CANARY_CONTEXT))
    from deploy.canary import key_frames
    from tools.datasets import plain_frames
    plain, _ = plain_frames(fleet_vault.dataset, 32)
    gen = fleet_vault.vault.device("cam-01").generation()
    sensor = gen.key_set().sensor
    keyed = key_frames(sensor, plain)
    assert any(np.array_equal(frames[0], k) for k in keyed)
    assert not any(np.array_equal(frames[0], p) for p in plain)


def test_health_check_timeout_rolls_back(device_root, bundles, fleet_vault, tmp_path):
    snap = snapshot(device_root)
    manifest_health = {"canary": "canary.npz", "timeout_s": 0.01, "frames": 8}
    slow = rebundle(bundles["2.0.0"], tmp_path / "slow.bundle", fleet_vault.vault, health=manifest_health)
    answer = deploy(local(device_root), slow)
    assert not answer["ok"] and "timed out" in answer["reason"]
    assert_still_running(device_root, snap)


def test_agent_side_imports_no_host_code():
    """The device agent and health check import nothing from tools/, keys/ (scipy) or torch."""
    import subprocess
    import sys
    code = ("import sys, deploy.agent, deploy.health, edge.runtime; "
            "device_keys = ('keys', 'keys.sealing', 'keys.keystore', 'keys.device_files'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tools', 'keys', 'torch', 'scipy') "
            "and m not in device_keys]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rollback_target_is_forgotten_once_overwritten(device_root, bundles, fleet_vault, tmp_path):
    t = local(device_root)
    assert deploy(t, bundles["2.0.0"])["ok"]                 # a=1.0.0 (previous), b=2.0.0
    (device_root / "fail_start").touch()
    failed = deploy(t, rebundle(bundles["2.0.0"], tmp_path / "v25.bundle", fleet_vault.vault, version="2.5.0"))
    assert not failed["ok"] and failed["rolled_back_to"] == "b"   # 2.5.0 went into slot a and failed
    (device_root / "fail_start").unlink()
    rb = t.agent("rollback")
    assert not rb["ok"] and "no previous slot" in rb["error"]


def test_check_committed_refuses_a_slot_that_is_not_the_running_committed_one(device_root, bundles):
    """Mender's ArtifactCommit re-checks only the slot this deployment installed, while it still runs."""
    assert deploy(local(device_root), bundles["2.0.0"])["ok"]
    agent = Agent(device_root)
    assert agent.check_committed("b", "2.0.0")["ok"]
    for slot, version in (("a", "2.0.0"), ("b", "9.9.9")):
        verdict = agent.check_committed(slot, version)
        assert not verdict["ok"] and "no longer the running, committed slot" in verdict["reason"]
