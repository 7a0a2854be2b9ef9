"""Bundle format, signatures, sealed secrets, manifest/inventory/agent-config validation (no models)."""
from __future__ import annotations

import io
import tarfile

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from base.errors import ConfigError
from base.signing import SignatureError, raw_public
from deploy.bundle import extract, read_manifest, verify_bundle, write_bundle
from deploy.device import load_service_config
from deploy.inventory import load_inventory, select
from deploy.manifest import BundleError, Manifest, parse_version
from keys.sealing import SealedFileError, seal, unseal

KEY = Ed25519PrivateKey.generate()
PUB = raw_public(KEY)


def _manifest(**kw) -> Manifest:
    base = dict(device_id="cam-1", version="1.2.0", minimum_version="1.0", compatible=["rpi4"], files={})
    return Manifest(**{**base, **kw})


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "b.bundle"
    write_bundle(path, _manifest(), {"model.tflite": b"m" * 5000, "device.yaml": b"x: 1\n"}, KEY)
    return path


def _tar_members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def _write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_roundtrip_and_extract(bundle, tmp_path):
    m = verify_bundle(bundle, PUB)
    assert m.device_id == "cam-1" and set(m.files) == {"model.tflite", "device.yaml"}
    extract(bundle, m, tmp_path / "slot")
    assert (tmp_path / "slot" / "model.tflite").read_bytes() == b"m" * 5000
    assert (tmp_path / "slot" / "manifest.json").exists()


def test_other_signing_key_is_refused(bundle):
    with pytest.raises(SignatureError, match="bad bundle signature"):
        read_manifest(bundle, raw_public(Ed25519PrivateKey.generate()))


def test_signature_is_checked_before_any_payload(bundle, tmp_path):
    members = _tar_members(bundle)
    members[0] = (members[0][0], members[0][1].replace(b"1.2.0", b"9.2.0"))   # forged manifest
    members[2] = (members[2][0], b"evil")                                       # and payload
    bad = tmp_path / "bad.bundle"
    _write_tar(bad, members)
    with pytest.raises(SignatureError):
        verify_bundle(bad, PUB)


@pytest.mark.parametrize("mutate, message", [
    (lambda ms: ms[:3], "missing"),                                            # member dropped
    (lambda ms: ms + [("extra.bin", b"1")], "not in the manifest"),            # member added
    (lambda ms: ms[:2] + [(ms[2][0], ms[2][1][:-1] + b"?")] + ms[3:], "sha256"),   # same size, other bytes
    (lambda ms: ms[:2] + [(ms[2][0], ms[2][1] + b"?")] + ms[3:], "size"),
    (lambda ms: [ms[1], ms[0]] + ms[2:], "must start with"),
])
def test_payload_mismatches_are_refused(bundle, tmp_path, mutate, message):
    bad = tmp_path / "bad.bundle"
    _write_tar(bad, mutate(_tar_members(bundle)))
    with pytest.raises(BundleError, match=message):
        verify_bundle(bad, PUB)


def test_truncated_and_garbage_files(bundle, tmp_path):
    cut = tmp_path / "cut.bundle"
    cut.write_bytes(bundle.read_bytes()[:3000])
    with pytest.raises(BundleError):
        verify_bundle(cut, PUB)
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BundleError):
        verify_bundle(junk, PUB)


@pytest.mark.parametrize("kw, message", [
    ({"device_id": "../x"}, "invalid device id"),
    ({"version": "1.x"}, "invalid version"),
    ({"minimum_version": "2.0"}, "above the version"),
    ({"compatible": []}, "compatible"),
    ({"files": {"../etc/passwd": {"sha256": "0" * 64, "size": 1}}}, "not allowed"),
    ({"files": {"a": {"sha256": "0" * 64, "size": 1}}, "secrets": {"b": {}}}, "sealed secret"),
])
def test_manifest_validation(kw, message):
    m = _manifest(**{"files": {"a": {"sha256": "0" * 64, "size": 1}}, **kw})
    with pytest.raises(BundleError, match=message):
        m.validate()


def test_version_order():
    assert parse_version("1.10") > parse_version("1.9.9") and parse_version("2") == parse_version("2.0.0")


def test_sealed_secret_opens_only_on_its_device():
    device, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    blob = seal(raw_public(device), b"sensor key bytes", "cam-1/sensor.key")
    assert b"sensor key bytes" not in blob
    assert unseal(device, blob, "cam-1/sensor.key") == b"sensor key bytes"
    with pytest.raises(SealedFileError, match="sealed to device key .* but this device's key is"):
        unseal(other, blob, "cam-1/sensor.key")
    with pytest.raises(SealedFileError, match="expected 'cam-2/sensor.key'"):
        unseal(device, blob, "cam-2/sensor.key")          # context recorded and bound in
    forged = blob.replace(b"cam-1/sensor.key", b"cam-2/sensor.key")   # header edited to match
    with pytest.raises(SealedFileError, match="altered"):
        unseal(device, forged, "cam-2/sensor.key")
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(SealedFileError, match="altered"):
        unseal(device, bytes(flipped), "cam-1/sensor.key")
    with pytest.raises(SealedFileError, match="clear TFLite model"):
        unseal(device, b"\x1c\x00\x00\x00TFL3" + bytes(64), "cam-1/model")
    with pytest.raises(SealedFileError, match="not a keycam sealed file"):
        unseal(device, b"PK\x03\x04 some zip", "cam-1/canary")
    with pytest.raises(SealedFileError, match="truncated"):
        unseal(device, blob[:40], "cam-1/sensor.key")


def test_inventory_validation(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"defaults": {"python": "/usr/bin/python3"}, "devices": [
        {"id": "cam-1", "target": "ssh://pi@10.0.0.5:2222/var/lib/keycam", "port": 22},
        {"id": "cam-2", "target": "dir:sd/root"}]}))
    entries = load_inventory(inv)
    t = entries[0].transport()
    assert (t.host, t.port, t.user, t.root, t.python) == ("10.0.0.5", 2222, "pi", "/var/lib/keycam", "/usr/bin/python3")
    assert entries[1].transport().root == str(tmp_path / "sd" / "root")
    assert [e.device_id for e in select(entries, ("cam-2",))] == ["cam-2"]
    for doc, message in [
        ({"devices": []}, "non-empty"),
        ({"devices": [{"id": "a"}]}, "needs 'id' and 'target'"),
        ({"devices": [{"id": "a", "target": "ftp://x"}]}, "unknown target"),
        ({"devices": [{"id": "a", "target": "dir:/x", "colour": "red"}]}, "unknown option"),
        ({"devices": [{"id": "a", "target": "dir:/x"}, {"id": "a", "target": "dir:/y"}]}, "listed twice"),
        ({"devices": [{"id": "a", "target": "dir:/x", "port": "22"}]}, "wrong type"),
    ]:
        inv.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match=message):
            load_inventory(inv)


def test_agent_config_validation(tmp_path):
    cfg = tmp_path / "agent.yaml"
    assert load_service_config(cfg).restart is None          # absent: no service (first flash)
    cfg.write_text(yaml.safe_dump({"service": {"restart": "systemctl restart keycam",
                                               "is_active": ["systemctl", "is-active", "keycam"]}}))
    svc = load_service_config(cfg)
    assert svc.restart == ["/bin/sh", "-c", "systemctl restart keycam"] and svc.start_timeout_s == 10
    for doc, message in [({"service": {"restart": "x"}}, "both"), ({"health": {"timeout_s": -1}}, "seconds"),
                         ({"services": {}}, "top-level"), ({"service": {"restart": []}}, "command line")]:
        cfg.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match=message):
            load_service_config(cfg)
