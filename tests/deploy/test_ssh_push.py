"""Deploys over SSH to a real sshd on 127.0.0.1 (throwaway host and user keys), driven by an inventory."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from deploy.inventory import load_inventory
from deploy.transport import TransportError
from keycam.deploy_cli import deploy
from tests.kits.deploy import assert_still_running, service, snapshot


def _ssh_root(template_root, tmp_path, name="ssh-device"):
    root = tmp_path / name
    shutil.copytree(template_root, root, symlinks=True)
    assert service(root, "restart") == 0
    return root


def _inventory(tmp_path, sshd, roots: dict, bundle=None) -> str:
    devices = [{"id": dev, "target": sshd.target(root)} for dev, root in roots.items()]
    if bundle:
        for d in devices:
            d["bundle"] = str(bundle)
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"defaults": sshd.options(), "devices": devices}))
    return str(path)


def _push(fleet_vault, *args):
    return CliRunner().invoke(deploy, ["push", *args, "--pubkey", str(fleet_vault.dir / "vault.kcv.signing.pub")])


def test_push_over_ssh_then_status_and_rollback(sshd, template_root, bundles, fleet_vault, tmp_path):
    root = _ssh_root(template_root, tmp_path)
    try:
        inv = _inventory(tmp_path, sshd, {"cam-01": root})
        dry = _push(fleet_vault, "--inventory", inv, "--bundles", str(bundles["2.0.0"].parent), "--dry-run", "--json")
        assert dry.exit_code == 0, dry.output
        planned = json.loads(dry.stdout)[0]
        assert (planned["status"], planned["from_version"], planned["version"]) == ("planned", "1.0.0", "3.0.0")
        assert json.loads((root / "state.json").read_text())["version"] == "1.0.0", "dry run changed nothing"

        res = _push(fleet_vault, "--inventory", inv, "--json", "--bundles", str(bundles["2.0.0"].parent))
        assert res.exit_code == 0, res.output
        result = json.loads(res.stdout)[0]
        assert result["status"] == "installed" and result["version"] == "3.0.0", result
        assert result["target"].startswith("ssh://") and result["health"]["ok"]

        st = CliRunner().invoke(deploy, ["status", "--inventory", inv, "--json"])
        assert st.exit_code == 0, st.output
        status = json.loads(st.stdout)[0]
        assert (status["committed"], status["version"], status["service_up"]) == ("b", "3.0.0", True)
        rb = CliRunner().invoke(deploy, ["rollback", "--inventory", inv, "--json"])
        assert rb.exit_code != 0 and "below the minimum version 3.0.0" in rb.output
    finally:
        service(root, "stop")


def test_ssh_truncated_upload_and_remote_crash(sshd, template_root, bundles, tmp_path):
    root = _ssh_root(template_root, tmp_path)
    try:
        snap = snapshot(root)
        entry = load_inventory(_inventory(tmp_path, sshd, {"cam-01": root}))[0]
        data = bundles["2.0.0"].read_bytes()
        t = entry.transport()
        answer = t.agent("receive", "--sha256", hashlib.sha256(data).hexdigest(), "--size", str(len(data)),
                         stdin=data[:1000])
        assert not answer["ok"] and "upload truncated" in answer["error"]
        up = t.upload(bundles["2.0.0"])
        assert up["ok"]
        crashing = entry.transport(env={"KEYCAM_AGENT_CRASH_AT": "restarted"})
        with pytest.raises(TransportError):
            crashing.agent("install", up["path"])
        assert t.agent("recover")["recovered"]
        assert_still_running(root, snap)
    finally:
        service(root, "stop")


def test_canary_failure_stops_the_rollout(sshd, template_root, bundles, fleet_vault, tmp_path):
    first = _ssh_root(template_root, tmp_path, "first")
    second = _ssh_root(template_root, tmp_path, "second")
    try:
        (first / "fail_start").touch()             # the canary's service will not come up
        snaps = {r: snapshot(r) for r in (first, second)}
        inv = tmp_path / "inv.yaml"
        inv.write_text(yaml.safe_dump({"defaults": sshd.options(), "devices": [
            {"id": "cam-01", "target": sshd.target(first), "bundle": str(bundles["2.0.0"])},
            {"id": "cam-01b", "target": sshd.target(second), "bundle": str(bundles["2.0.0"])}]}))
        res = _push(fleet_vault, "--inventory", str(inv), "--canary", "1", "--json")
        assert res.exit_code != 0
        results = json.loads(res.output[: res.output.rindex("]") + 1])
        assert [r["status"] for r in results] == ["rolled back", "skipped"]
        (first / "fail_start").unlink()
        assert service(first, "restart") == 0
        for root in (first, second):
            assert_still_running(root, snaps[root])
    finally:
        for root in (first, second):
            service(root, "stop")


def test_limit_selects_devices(sshd, template_root, bundles, fleet_vault, tmp_path):
    inv = _inventory(tmp_path, sshd, {"cam-01": tmp_path / "a", "cam-02": tmp_path / "b"}, bundles["2.0.0"])
    res = _push(fleet_vault, "--inventory", inv, "--limit", "cam-02", "--dry-run", "--json")
    results = json.loads(res.output[: res.output.rindex("]") + 1])
    assert [r["device"] for r in results] == ["cam-02"]
    assert results[0]["status"] == "failed" and "not 'cam-02'" in results[0]["reason"]
    bad = _push(fleet_vault, "--inventory", inv, "--limit", "cam-77", "--dry-run")
    assert bad.exit_code != 0 and "cam-77" in bad.output
