"""The README flow from a shell: the installed `keycam` console script, a vault, a dir: target.

keys init/provision/show/export, deploy build/verify/push/status, then rotate: the new key set stays
pending until the push of a bundle built from it succeeds, which confirms it in the vault.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from edge.config import load_config
from tests.kits.deploy import base_model

KEYCAM = str(Path(sys.executable).with_name("keycam"))


def test_provision_build_push_rotate_from_a_shell(tmp_path):
    model, dataset = base_model()
    env = {**os.environ, "KEYCAM_VAULT": str(tmp_path / "v.kcv"), "KEYCAM_VAULT_PASSPHRASE": "shell-flow-pass"}
    canary = ["--canary-dataset", dataset] if dataset else []
    root, out = tmp_path / "sdcard", tmp_path / "bundles"
    out.mkdir()

    def keycam(*args: str) -> str:
        proc = subprocess.run([KEYCAM, *args], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"keycam {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    template = tmp_path / "cam-07.yaml"
    template.write_text(yaml.safe_dump({
        "camera": {"type": "picamera2", "size": [28, 28]},
        "key_stage": {"type": "faceplate", "port": "/dev/ttyAMA0", "expected_id": "FP-0007"},
        "sinks": [{"type": "mqtt", "topic": "keycam/cam-07"}]}))
    keycam("keys", "init")
    assert (os.stat(tmp_path / "v.kcv").st_mode & 0o777) == 0o600
    keycam("keys", "provision", "cam-07", "--model", str(model), "--profile", "stem", "--config", str(template),
           *canary)
    shown = keycam("keys", "show", "cam-07", "--json")
    assert "secret" not in shown and "model_sealed" not in shown and "canary" not in shown
    first_fp = json.loads(shown)["generations"][0]["key_fingerprint"]
    keycam("keys", "export", "cam-07", "--out", str(root))
    assert not (root / "sensor.key").exists(), "a device with a faceplate never receives its sensor key"
    keycam("deploy", "build", "cam-07", "--version", "1.0.0", "--out", str(out))
    bundle = out / "cam-07-1.0.0.bundle"
    assert "4 files verified" not in keycam("deploy", "verify", str(bundle))   # 3 files: no sensor key
    keycam("deploy", "push", "--target", f"dir:{root}", "--bundle", str(bundle), "--no-service")
    status = json.loads(keycam("deploy", "status", "--target", f"dir:{root}", "--json"))[0]
    assert (status["device_id"], status["version"], status["committed"]) == ("cam-07", "1.0.0", "a")
    config = load_config(root / "slots" / "current" / "device.yaml")     # what `keycam run` will load
    assert (config.device_id, config.key_stage.expected_id) == ("cam-07", "FP-0007")
    assert config.model.path == str(root / "slots" / "current" / "model.tflite")   # a slot switch is seen
    assert config.identity == str(root / "identity")

    keycam("keys", "rotate", "cam-07", *canary)
    listed = json.loads(keycam("keys", "list", "--json"))[0]
    assert listed["active"] == first_fp and listed["pending"] not in (None, first_fp)
    new_fp = listed["pending"]
    keycam("deploy", "build", "cam-07", "--version", "1.1.0", "--keyset", "pending", "--out", str(out))
    keycam("deploy", "push", "--target", f"dir:{root}", "--bundle", str(out / "cam-07-1.1.0.bundle"), "--no-service")
    listed = json.loads(keycam("keys", "list", "--json"))[0]
    assert (listed["active"], listed["pending"]) == (new_fp, None)
    audit = json.loads(keycam("keys", "audit", "--json"))
    assert audit["problems"] == []
    assert [e["action"] for e in audit["entries"]] == [
        "init", "provision", "export", "bundle", "rotate", "bundle", "confirm"]
