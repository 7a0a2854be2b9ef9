"""The user flow with the real CLI, then a scan for key material in clear (issue 15 part 1).

keys init, provision (no faceplate: the sensor key ships too), export, deploy build, push to a dir:
device, `keycam run` on the slot, then rotate + build + push while the service runs (hot swap). The
vault file, every member of every bundle and every file under the device root must hold no TFLite
flatbuffer and no run of any sensor-key array; a control shows the scanner finds both in clear bytes.
The vault starts in the older format (a clear model_int8) to check that its first write seals it.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from deploy.device import DeviceRoot
from keys.fields import b64d, b64e
from keys.keyset import KeySet
from keys.sealing import ROLE_MODEL, context_for, is_sealed, unseal
from keys.vault import Vault
from tests.kits.deploy import base_model

KEYCAM = str(Path(sys.executable).with_name("keycam"))
PASS = "sealed-flow-passphrase"
RUN = 8          # values per searched run of a key array


def key_needles(keyset: KeySet) -> list[bytes]:
    """Byte runs that betray a key: windows of every factor array of every key of the key set, as the
    integer or float types a writer might store them in (windows of equal values are skipped)."""
    needles = []
    for key in [keyset.sensor, *keyset.layers] + ([keyset.output] if keyset.output else []):
        for factor in key.factors:
            for arr in factor.arrays().values():
                flat = np.asarray(arr).reshape(-1)
                kinds = ("<i8", "<i4", "<i2") if flat.dtype.kind in "iu" else ("<f8", "<f4")
                for start in range(0, max(len(flat) - RUN, 0) + 1, RUN):
                    window = flat[start:start + RUN]
                    if len(window) == RUN and len(np.unique(window)) == RUN:
                        needles += [window.astype(kind).tobytes() for kind in kinds]
    return needles


def clear_findings(name: str, data: bytes, needles: list[bytes]) -> list[str]:
    """What in `data` is key material in clear: a TFLite flatbuffer, or a run of a key array."""
    found = []
    if data[4:8] == b"TFL3" or b"TFL3" in data:
        found.append(f"{name}: TFLite flatbuffer (TFL3)")
    hits = sum(needle in data for needle in needles)
    if hits:
        found.append(f"{name}: {hits} runs of key arrays")
    return found


def scan_tree(root: Path, needles: list[bytes]) -> list[str]:
    return [f for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
            for f in clear_findings(str(p), p.read_bytes(), needles)]


def scan_vault_file(path: Path, needles: list[bytes]) -> list[str]:
    """The vault file's text, and its base64 fields decoded (base64 text itself spells `TFL3` by chance)."""
    doc = json.loads(path.read_bytes())
    fields = {"kdf.salt": doc["kdf"]["salt"], **{k: doc[k] for k in ("check", "nonce", "ciphertext")}}
    found = [f for f in clear_findings("vault file", path.read_bytes(), needles) if "TFL3" not in f]
    return found + [f for name, text in fields.items()
                    for f in clear_findings(f"vault {name}", base64.b64decode(text), needles)]


def scan_bundle(path: Path, needles: list[bytes]) -> list[str]:
    with tarfile.open(path) as tar:
        return [f for m in tar.getmembers() if m.isfile()
                for f in clear_findings(f"{path.name}:{m.name}", tar.extractfile(m).read(), needles)]


def _make_old_format(vault_path: Path, device: str) -> None:
    """Turn the vault's record into the older format: the keyed model in clear, no canary."""
    with Vault.edit(vault_path, PASS) as vault:
        dev = vault.device(device)
        private = X25519PrivateKey.from_private_bytes(b64d(dev.device_private, "device_private"))
        for gen in dev.generations:
            model = unseal(private, b64d(gen.model_sealed, "m"), context_for(device, ROLE_MODEL))
            gen.model_int8, gen.model_sealed, gen.canary = b64e(model), None, None


class Service:
    """`keycam run` in the background; its stdout records arrive on a queue."""

    def __init__(self, config: Path, env: dict, summary: Path):
        self.proc = subprocess.Popen([KEYCAM, "run", "--config", str(config), "--summary-json", str(summary)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.records: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.records.put(json.loads(line))

    def wait_for(self, match, timeout: float = 60.0) -> dict:
        while True:
            try:
                rec = self.records.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no matching record within {timeout} s: {self.proc.stderr.read()[-2000:]}")
            if match(rec):
                return rec

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return err


@pytest.mark.slow
def test_user_flow_leaves_no_key_material_in_clear(tmp_path):
    model, dataset = base_model()
    vault_path, root, out = tmp_path / "v.kcv", tmp_path / "sdcard", tmp_path / "bundles"
    out.mkdir()
    env = {**os.environ, "KEYCAM_VAULT": str(vault_path), "KEYCAM_VAULT_PASSPHRASE": PASS}
    canary = ["--canary-frames", "8"] + (["--canary-dataset", dataset] if dataset else [])

    def keycam(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([KEYCAM, *args], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"keycam {' '.join(args)}: {proc.stderr}"
        return proc

    template = tmp_path / "cam.yaml"
    template.write_text(yaml.safe_dump({
        "camera": {"type": "replay", "source": "samples", "fps": 100, "loop": True},
        "model": {"watch_interval_s": 0.2}, "metrics": {"enabled": False},
        "pipeline": {"stats_interval_s": 0}, "sinks": [{"type": "stdout"}]}))
    keycam("keys", "init")
    keycam("keys", "provision", "cam-s", "--model", str(model), "--profile", "stem", "--no-faceplate",
           "--config", str(template), *canary)
    _make_old_format(vault_path, "cam-s")
    exported = keycam("keys", "export", "cam-s", "--out", str(root))      # the first write seals the old record
    assert "sealed cam-s's keyed models" in exported.stderr
    gen = Vault.open(vault_path, PASS).device("cam-s").generation()
    assert gen.model_int8 is None and is_sealed(b64d(gen.model_sealed, "m")) and gen.canary is not None
    keycam("deploy", "build", "cam-s", "--version", "1.0.0", "--out", str(out), "--canary-frames", "8")
    keycam("deploy", "push", "--target", f"dir:{root}", "--bundle", str(out / "cam-s-1.0.0.bundle"), "--no-service")
    current = root / "slots" / "current" / "device.yaml"
    ran = keycam("run", "--config", str(current), "--frames", "20")
    predictions = [json.loads(line) for line in ran.stdout.splitlines()]
    assert len(predictions) == 20 and all(r["type"] == "prediction" for r in predictions)
    assert {r["key_fingerprint"] for r in predictions} == {gen.key_fingerprint}

    # rotate while the service runs: the push switches the slot, the service hot-swaps the new pair
    service = Service(current, env, tmp_path / "summary.json")
    service.wait_for(lambda r: r["type"] == "prediction")
    keycam("keys", "rotate", "cam-s", *canary)
    keycam("deploy", "build", "cam-s", "--version", "1.1.0", "--keyset", "pending", "--out", str(out),
           "--canary-frames", "8")
    keycam("deploy", "push", "--target", f"dir:{root}", "--bundle", str(out / "cam-s-1.1.0.bundle"), "--no-service")
    new = Vault.open(vault_path, PASS).device("cam-s").generation()
    assert new.key_fingerprint != gen.key_fingerprint, "the push confirmed the rotated key set"
    service.wait_for(lambda r: r.get("reason") == "model_swapped")
    service.wait_for(lambda r: r.get("key_fingerprint") == new.key_fingerprint)
    service.stop()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model_swaps"] == 1 and summary["key_fingerprint"] == new.key_fingerprint

    # the scan: nothing a thief of the vault file, a bundle or the SD card gets holds key material in clear
    vault = Vault.open(vault_path, PASS)
    needles = [n for g in vault.device("cam-s").generations
               for n in key_needles(g.key_set())]
    assert len(needles) > 100
    findings = scan_vault_file(vault_path, needles)
    for g in vault.device("cam-s").generations:       # inside the vault, too, the models are sealed
        findings += clear_findings(f"vault model {g.generation}", b64d(g.model_sealed, "m"), needles)
    for bundle in sorted(out.glob("*.bundle")):
        findings += scan_bundle(bundle, needles)
    findings += scan_tree(root, needles)
    assert findings == []
    assert len(list(root.rglob("*"))) > 15 and len(list(out.glob("*.bundle"))) == 2

    # control: the same scanners find a clear model and a clear key (opened here in memory)
    key = DeviceRoot(root).device_key()
    clear_model = unseal(key, (root / "slots" / "current" / "model.tflite").read_bytes(),
                         context_for("cam-s", ROLE_MODEL))
    assert clear_findings("clear model", clear_model, needles) != []
    leaky = tmp_path / "leaky.kcv"      # a vault-shaped file whose payload were the clear model
    leaky.write_text(json.dumps({"kdf": {"salt": ""}, "check": "", "nonce": "",
                                 "ciphertext": base64.b64encode(clear_model).decode()}))
    assert scan_vault_file(leaky, needles) != []
    sensor = new.key_set().sensor
    assert clear_findings("clear sensor key", sensor.to_bytes(), needles) != []
    perm = next(a for f in sensor.factors for a in f.arrays().values() if np.asarray(a).dtype.kind in "iu")
    assert clear_findings("int16 dump", b"x" * 7 + np.asarray(perm)[5:40].astype("<i2").tobytes(), needles) != []
