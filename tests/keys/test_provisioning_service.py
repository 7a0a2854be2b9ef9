"""The provisioning and export services called directly (no click): provision, rotate, confirm, export."""
from __future__ import annotations

from pathlib import Path

import pytest

from base.errors import ConfigError
from deploy.device import DeviceRoot
from deploy.export import ExportOptions, export_device
from deploy.health import load_canary
from keys import lifecycle
from keys.fields import VaultError, b64d
from keys.sealing import ROLE_MODEL, context_for, unseal
from keys.vault import Vault
from tools.provisioning import CanarySpec, DeviceSpec, device_key_pair, provision, rekey, rotate

MODEL = Path(__file__).resolve().parents[2] / "tools" / "models" / "lenet_mnist.onnx"
PASS = "provisioning-service-pass"


@pytest.mark.slow
def test_provision_rotate_confirm_export_without_the_cli(tmp_path):
    vault, _ = lifecycle.init_vault(tmp_path / "v.kcv", PASS)
    spec = DeviceSpec("cam-svc", MODEL, profile="stem", faceplate=False, hardware="pi5")
    with Vault.edit(vault.path, PASS) as v:
        record = provision(v, spec, device_key_pair(None), CanarySpec(frames=3))
        with pytest.raises(VaultError, match="already provisioned"):
            provision(v, spec, device_key_pair(None))
    first = record.generation()
    assert (first.generation, first.state, first.profile) == (1, "active", "stem")
    assert len(load_canary(b64d(first.canary, "canary"))[0]) == 3
    assert record.device_private is not None and first.model_source.unchanged()

    with Vault.edit(vault.path, PASS) as v:
        done = rotate(v, "cam-svc", canary=CanarySpec(frames=2))
        assert done.active.key_fingerprint == first.key_fingerprint
        assert done.pending.state == "pending" and done.pending.key_fingerprint != first.key_fingerprint
        with pytest.raises(VaultError, match="already has a pending key set"):
            rotate(v, "cam-svc")
        lifecycle.confirm(v, "cam-svc")

    with pytest.raises(ConfigError, match="--tpm-tcti is an option of --store tpm2"):
        ExportOptions(tpm_tcti="swtpm:port=1")
    out = tmp_path / "sd"
    with Vault.edit(vault.path, PASS) as v:
        written = export_device(v, "cam-svc", out, ExportOptions(), rekey)
        dev = v.device("cam-svc")
    assert written == ["model.tflite", "sensor.key", "device.yaml", "identity/"]
    assert dev.device_private is None, "the vault's copy of the device key left with the export"
    active = dev.generation()
    assert active.generation == 2
    model = unseal(DeviceRoot(out).device_key(), (out / "model.tflite").read_bytes(),
                   context_for("cam-svc", ROLE_MODEL))
    assert model == rekey(dev, active), "the exported model is the one the secret makes again"
