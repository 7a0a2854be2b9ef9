"""`keycam keys` commands against a real vault and real keying (one provisioned device per module)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.runtime import TFLiteModel
from hardware.camera.samples import load_samples
from keycam.keys_cli import keys
from keys.fields import b64d
from keys.records import DeviceRecord, Generation
from keys.sealing import ROLE_MODEL, ROLE_SENSOR_KEY, context_for, is_sealed, unseal
from keys.vault import Vault
from tools.datasets import load_dataset

REPO = Path(__file__).resolve().parents[2]
PASS = "keys-cli-test-pass"
FASHION = REPO / "tools" / "models" / "lenet_fashion.onnx"
MODEL = FASHION if FASHION.exists() else REPO / "tools" / "models" / "lenet_mnist.onnx"


def _frames(n):
    return load_samples(limit=n) if MODEL == FASHION else load_dataset("mnist", "test", limit=n)


@pytest.fixture(scope="module")
def vault_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "vault.kcv"
    env = {"KEYCAM_VAULT_PASSPHRASE": PASS}
    for args in (["init"], ["provision", "cam-enc", "--model", str(MODEL), "--profile", "stem",
                            "--output-encryption", "--no-faceplate", "--hardware", "pi5"]):
        res = CliRunner().invoke(keys, [*args, "--vault", str(path)], env=env)
        assert res.exit_code == 0, res.output
    return path


def run(vault_path, *args, env=None, input=None):
    env = {"KEYCAM_VAULT_PASSPHRASE": PASS} if env is None else env
    return CliRunner().invoke(keys, [*args, "--vault", str(vault_path)], env=env, input=input)


def _clear_model(dev: DeviceRecord, gen: Generation, key=None) -> bytes:
    """The generation's model, opened with the device key (the vault's copy before the first export)."""
    key = key or X25519PrivateKey.from_private_bytes(b64d(dev.device_private, "device_private"))
    return unseal(key, b64d(gen.model_sealed, "model_sealed"), context_for(dev.device_id, ROLE_MODEL))


def test_passphrase_sources(vault_path, tmp_path):
    passfile = tmp_path / "pass"
    passfile.write_text(PASS + "\n")
    ok = run(vault_path, "list", "--passphrase-file", str(passfile), env={"KEYCAM_VAULT_PASSPHRASE": ""})
    assert ok.exit_code == 0 and "cam-enc" in ok.output
    none = run(vault_path, "list", env={"KEYCAM_VAULT_PASSPHRASE": ""})
    assert none.exit_code != 0 and "no vault passphrase" in none.output
    wrong = run(vault_path, "list", env={"KEYCAM_VAULT_PASSPHRASE": "not-the-one"})
    assert wrong.exit_code != 0 and "wrong passphrase" in wrong.output


def test_show_hides_secrets_unless_revealed(vault_path):
    secret = b64d(Vault.open(vault_path, PASS).device("cam-enc").generation().secret, "secret").hex()
    shown = run(vault_path, "show", "cam-enc")
    assert shown.exit_code == 0 and "key set" in shown.output and secret not in shown.output
    assert "private" not in run(vault_path, "show", "cam-enc", "--json").output
    revealed = run(vault_path, "show", "cam-enc", "--reveal")
    assert revealed.exit_code == 0 and secret in revealed.output
    log = json.loads(run(vault_path, "audit", "--json").stdout)
    assert log["entries"][-1]["action"] == "reveal" and log["problems"] == []


def test_provision_twice_and_unknown_device_are_errors(vault_path):
    again = run(vault_path, "provision", "cam-enc", "--model", str(MODEL))
    assert again.exit_code != 0 and "already provisioned" in again.output
    unknown = run(vault_path, "show", "cam-nope")
    assert unknown.exit_code != 0 and "not in the vault (known: cam-enc" in unknown.output
    bad_id = run(vault_path, "provision", "../evil", "--model", str(MODEL))
    assert bad_id.exit_code != 0 and "invalid device id" in bad_id.output


def test_decode_encrypted_predictions(vault_path, tmp_path):
    vault = Vault.open(vault_path, PASS)
    gen = vault.device("cam-enc").generation()
    ks = gen.key_set()
    model = TFLiteModel(_clear_model(Vault.open(vault_path, PASS).device("cam-enc"), gen))
    assert model.metadata["output_encrypted"] is True
    frames, labels = _frames(40)
    from deploy.canary import key_frames
    outputs = model.predict(key_frames(ks.sensor, frames))
    records = [{"type": "prediction", "seq": i, "timestamp": 1.8e9, "model_id": gen.model_id,
                "key_fingerprint": gen.key_fingerprint, "encrypted_logits": [float(v) for v in out]}
               for i, out in enumerate(outputs)]
    src = tmp_path / "records.jsonl"
    alarm = {"type": "alarm", "seq": 99, "reason": "camera_error"}
    src.write_text("\n".join(json.dumps(r) for r in records + [alarm]) + "\n")
    res = run(vault_path, "decode", str(src))
    assert res.exit_code == 0, res.output
    decoded = [json.loads(line) for line in res.output.splitlines()]
    assert decoded.pop() == alarm, "records without encrypted logits pass through"
    names = gen.labels or [str(i) for i in range(10)]
    got = [names.index(d["top_k"][0]["label"]) for d in decoded]
    assert got == list(np.argmax(ks.output.apply_inverse(outputs), axis=1))
    assert np.mean(np.array(got) == labels) >= 0.7, "decoded labels must match the true labels"
    assert not np.array_equal(np.argmax(outputs, axis=1), got), "the raw logits must not give the labels"
    # records without a fingerprint need --device; unknown fingerprints are refused
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"encrypted_logits": records[0]["encrypted_logits"]}) + "\n")
    assert run(vault_path, "decode", str(bare)).exit_code != 0
    assert run(vault_path, "decode", str(bare), "--device", "cam-enc").exit_code == 0
    alien = tmp_path / "alien.jsonl"
    alien.write_text(json.dumps({**records[0], "key_fingerprint": "f" * 64}) + "\n")
    res = run(vault_path, "decode", str(alien))
    assert res.exit_code != 0 and "no key set with fingerprint" in res.output


def test_export_for_a_device_without_faceplate(vault_path, tmp_path):
    out = tmp_path / "sd"
    res = run(vault_path, "export", "cam-enc", "--out", str(out))
    assert res.exit_code == 0, res.output
    gen = Vault.open(vault_path, PASS).device("cam-enc").generation()
    ks = gen.key_set()
    from deploy.device import DeviceRoot
    key = DeviceRoot(out).device_key()
    # model and sensor key are sealed to the device: only its key opens them, into memory
    for name, _role in (("sensor.key", ROLE_SENSOR_KEY), ("model.tflite", ROLE_MODEL)):
        assert is_sealed((out / name).read_bytes()) and (os.stat(out / name).st_mode & 0o777) == 0o600
    sealed_sensor = (out / "sensor.key").read_bytes()
    assert unseal(key, sealed_sensor, context_for("cam-enc", ROLE_SENSOR_KEY)) == ks.sensor.to_bytes()
    model = TFLiteModel(unseal(key, (out / "model.tflite").read_bytes(), context_for("cam-enc", ROLE_MODEL)))
    assert model.metadata["key_fingerprint"] == gen.key_fingerprint
    assert (os.stat(out / "identity" / "device.key").st_mode & 0o777) == 0o600
    from edge.config import load_config
    assert load_config(out / "device.yaml").identity == str(out / "identity")
    # the device's private key left the vault with that export: it now lives only on the device
    dev = Vault.open(vault_path, PASS).device("cam-enc")
    assert dev.device_private is None
    from base.signing import encode_public, raw_public
    assert encode_public(raw_public(key)) == dev.device_public
    ident = json.loads((out / "identity" / "device.json").read_text())
    assert ident == {"device_id": "cam-enc", "hardware": "pi5", "device_public": dev.device_public}
    # re-export to the same root keeps its key pair (issue 16 defect 4)
    res = run(vault_path, "export", "cam-enc", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert Vault.open(vault_path, PASS).device("cam-enc").device_public == dev.device_public
    assert encode_public(raw_public(DeviceRoot(out).device_key())) == dev.device_public
    # a fresh card: refused without --new-device-key, which says what it breaks
    fresh = run(vault_path, "export", "cam-enc", "--out", str(tmp_path / "sd2"))
    assert fresh.exit_code != 0 and "--new-device-key" in fresh.output and "no longer open" in fresh.output
    assert not (tmp_path / "sd2").exists(), "a refused export writes nothing"
    res = run(vault_path, "export", "cam-enc", "--out", str(tmp_path / "sd2"), "--new-device-key")
    assert res.exit_code == 0, res.output
    dev2 = Vault.open(vault_path, PASS).device("cam-enc")
    new_key = DeviceRoot(tmp_path / "sd2").device_key()
    assert dev2.device_public == encode_public(raw_public(new_key)) != dev.device_public
    # the vault's models were re-sealed to the new key (re-keyed from the secret: same model)
    for g in dev2.generations:
        if g.state in ("active", "pending"):
            import hashlib
            assert hashlib.sha256(_clear_model(dev2, g, new_key)).hexdigest() == g.model_sha256
    # the first card now holds a key the vault no longer records: re-export there is refused
    stale = run(vault_path, "export", "cam-enc", "--out", str(out))
    assert stale.exit_code != 0 and "belongs to another key pair" in stale.output
    log = json.loads(run(vault_path, "audit", "--json").stdout)["entries"]
    assert [e["action"] for e in log[-4:]] == ["export", "export", "device-key", "export"]


def test_research_export_writes_clear_files_only_when_asked(vault_path, tmp_path):
    out = tmp_path / "research"
    res = run(vault_path, "export", "cam-enc", "--out", str(out), "--new-device-key", "--clear-model")
    assert res.exit_code == 0, res.output
    assert "WARNING" in res.output and "determines the sensor key" in res.output
    assert (out / "model.tflite").read_bytes()[4:8] == b"TFL3"
    from edge.config import load_config
    assert load_config(out / "device.yaml").identity is None
    log = json.loads(run(vault_path, "audit", "--json").stdout)["entries"]
    assert log[-1]["details"]["clear_model"] is True


def test_key_store_choice(vault_path, tmp_path):
    import importlib.util
    res = run(vault_path, "export", "cam-enc", "--out", str(tmp_path / "x"), "--tpm-tcti", "swtpm:port=1")
    assert res.exit_code != 0 and "--store tpm2" in res.output
    if importlib.util.find_spec("keys.tpm2_store") is None:
        res = run(vault_path, "export", "cam-enc", "--out", str(tmp_path / "t"), "--new-device-key", "--store", "tpm2")
        assert res.exit_code != 0 and "tpm2 device key store is not available" in res.output
        assert not (tmp_path / "t").exists()


def test_rotate_confirm_and_revoke(vault_path):
    before = Vault.open(vault_path, PASS).device("cam-enc").generation().key_fingerprint
    assert run(vault_path, "rotate", "cam-enc").exit_code == 0
    vault = Vault.open(vault_path, PASS)
    pending = vault.device("cam-enc").generation(state="pending")
    assert vault.device("cam-enc").generation().key_fingerprint == before != pending.key_fingerprint
    assert pending.output_encryption and pending.profile == "stem"
    twice = run(vault_path, "rotate", "cam-enc")
    assert twice.exit_code != 0 and "already has a pending" in twice.output
    assert run(vault_path, "confirm", "cam-enc").exit_code == 0
    vault = Vault.open(vault_path, PASS)
    assert vault.device("cam-enc").generation().key_fingerprint == pending.key_fingerprint
    assert vault.device("cam-enc").generation(fingerprint=before).state == "retired"

    assert run(vault_path, "revoke", "cam-enc", "--reason", "stolen").exit_code == 0
    for args in (["rotate", "cam-enc"], ["export", "cam-enc", "--out", "/tmp/never"]):
        res = run(vault_path, *args)
        assert res.exit_code != 0 and "revoked" in res.output
    listed = json.loads(run(vault_path, "list", "--json").stdout)
    assert listed[0]["state"] == "revoked" and listed[0]["active"] is None
    actions = [e["action"] for e in json.loads(run(vault_path, "audit", "--json").stdout)["entries"]]
    assert actions[-3:] == ["rotate", "confirm", "revoke"]


def test_faceplate_device_needs_a_config_template(vault_path, tmp_path):
    import copy
    with Vault.edit(vault_path, PASS) as vault:       # a faceplate twin of cam-enc (no re-keying needed)
        twin = copy.deepcopy(vault.device("cam-enc"))
        twin.device_id, twin.faceplate, twin.state = "cam-fp", True, "active"
        for gen in twin.generations:
            gen.state = "active" if gen is twin.generations[-1] else "retired"
        vault.add_device(twin)
    res = run(vault_path, "export", "cam-fp", "--out", str(tmp_path / "sd"))
    assert res.exit_code != 0 and "needs key_stage {type: faceplate" in res.output
    assert not (tmp_path / "sd").exists(), "nothing is written when the config cannot be made"


def test_export_seals_the_device_key_to_a_tpm(vault_path, tmp_path):
    """`keys export --store tpm2`: refused before anything is written without a TPM; with a (software) TPM
    the device key is sealed to it, no copy of it is left on the card, and the device opens its model."""
    from deploy.device import DeviceRoot
    from keys.keystore import open_store
    from tests.kits.swtpm import soft_tpms
    assert run(vault_path, "provision", "cam-tpm", "--model", str(MODEL), "--profile", "stem",
               "--no-faceplate").exit_code == 0
    before = Vault.open(vault_path, PASS).data
    missing = run(vault_path, "export", "cam-tpm", "--out", str(tmp_path / "none"), "--store", "tpm2",
                  "--tpm-tcti", f"device:{tmp_path / 'tpmrm0'}")
    assert missing.exit_code != 0 and "no TPM 2.0 at device:" in missing.output and "--store file" in missing.output
    assert not (tmp_path / "none").exists() and Vault.open(vault_path, PASS).data == before
    with soft_tpms(tmp_path) as start:
        tpm = start()
        out = tmp_path / "sd-tpm"
        res = run(vault_path, "export", "cam-tpm", "--out", str(out), "--store", "tpm2", "--tpm-tcti", tpm.tcti)
        assert res.exit_code == 0, res.output
        identity = out / "identity"
        assert not (identity / "device.key").exists() and open_store(identity).name == "tpm2"
        raw = open_store(identity).private_bytes()
        assert not any(raw in p.read_bytes() for p in out.rglob("*") if p.is_file())
        key = DeviceRoot(out).device_key()
        sealed = (out / "model.tflite").read_bytes()
        assert is_sealed(sealed)
        assert TFLiteModel(unseal(key, sealed, context_for("cam-tpm", ROLE_MODEL), "model")).input_size == 784


def test_export_installs_the_mender_update_module(vault_path, tmp_path):
    """`keys export --mender-rootfs`: the keycam update module, the artifact verify key and the device type."""
    from deploy import mender
    assert run(vault_path, "provision", "cam-mdr", "--model", str(MODEL), "--profile", "stem", "--no-faceplate",
               "--hardware", "rpi5").exit_code == 0
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    res = run(vault_path, "export", "cam-mdr", "--out", str(rootfs / "var/lib/keycam"), "--mender-rootfs", str(rootfs))
    assert res.exit_code == 0, res.output
    module = rootfs / mender.MODULES_DIR.lstrip("/") / mender.MODULE_TYPE
    assert module.is_file() and os.access(module, os.X_OK)
    assert b"BEGIN PUBLIC KEY" in (rootfs / mender.VERIFY_KEY.lstrip("/")).read_bytes()
    assert mender.public_key_path(vault_path).read_bytes() == (rootfs / mender.VERIFY_KEY.lstrip("/")).read_bytes()
