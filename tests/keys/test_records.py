"""Typed vault records: the JSON round trip, one clear VaultError per malformed record, and the state
changes (rotate, confirm, revoke) on the records and through keys.lifecycle without the CLI."""
from __future__ import annotations

import copy
import json

import pytest

from keys import audit, lifecycle
from keys.fields import VaultError
from keys.records import DeviceRecord, Generation
from keys.vault import Vault
from tests.kits.records import sample_device, sample_generation

PASS = "records-test-passphrase"


def test_json_round_trip_is_exact():
    dev = sample_device("cam-1", config={"camera": {"type": "replay"}}, device_private="cHJpdmF0ZQ==")
    dev.generations.append(sample_generation(2, "pending"))
    doc = dev.to_json()
    assert json.loads(json.dumps(doc)) == doc, "the JSON form is plain JSON"
    again = DeviceRecord.from_json(json.loads(json.dumps(doc)), "devices.cam-1")
    assert again == dev and again.to_json() == doc
    assert isinstance(again.generations[1], Generation) and again.generations[1].model_source.sha256 == "00" * 32
    assert "revoked" not in doc and "model_int8" not in doc["generations"][0], "unset optional fields are left out"


def test_unknown_fields_are_kept_and_written_back():
    doc = sample_device().to_json()
    doc["added_by_a_later_keycam"] = {"x": 1}
    doc["generations"][0]["note"] = "kept"
    dev = DeviceRecord.from_json(doc, "devices.cam-1")
    assert dev.extra == {"added_by_a_later_keycam": {"x": 1}} and dev.generations[0].extra == {"note": "kept"}
    assert dev.to_json() == doc


def test_records_survive_a_vault_save_and_open(tmp_path):
    vault = Vault.create(tmp_path / "v.kcv", PASS)
    vault.add_device(sample_device("cam-1"))
    vault.save()
    assert Vault.open(vault.path, PASS).device("cam-1") == vault.device("cam-1")


def _broken(change) -> dict:
    doc = sample_device().to_json()
    change(doc)
    return doc


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("device_public"), r"devices.cam-1 lacks the field 'device_public'"),
    (lambda d: d.update(faceplate="yes"), r"devices.cam-1.faceplate must be bool, got str"),
    (lambda d: d.update(state="lost"), r"devices.cam-1.state is 'lost', not one of active, revoked"),
    (lambda d: d.update(device_id="../evil"), r"device_id '../evil' is not a valid device id"),
    (lambda d: d.update(generations={}), r"devices.cam-1.generations must be a list, got dict"),
    (lambda d: d.update(generations=[]), r"devices.cam-1 has no key-set generation"),
    (lambda d: d["generations"][0].update(generation=True), r"generations\[0\].generation must be int, got bool"),
    (lambda d: d["generations"][0].update(state="lost"), r"generations\[0\].state is 'lost'"),
    (lambda d: d["generations"][0].pop("keyset"), r"generations\[0\] lacks the field 'keyset'"),
    (lambda d: d["generations"][0].update(labels=["a", 1]), r"generations\[0\].labels\[1\] must be str, got int"),
    (lambda d: d["model_source"].pop("sha256"), r"devices.cam-1.model_source lacks the field 'sha256'"),
    (lambda d: d.update(config=[1]), r"devices.cam-1.config must be dict, got list"),
])
def test_a_malformed_record_is_one_vault_error_naming_the_field(change, message):
    with pytest.raises(VaultError, match=message):
        DeviceRecord.from_json(_broken(change), "devices.cam-1")


def test_a_vault_holding_a_malformed_record_does_not_open(tmp_path):
    vault = Vault.create(tmp_path / "v.kcv", PASS)
    vault.add_device(sample_device("cam-1", state="stolen"))       # records are checked when read, not made
    vault.save()
    with pytest.raises(VaultError, match=r"devices.cam-1.state is 'stolen'"):
        Vault.open(vault.path, PASS)
    vault.devices = {"cam-2": sample_device("cam-1")}
    vault.save()
    with pytest.raises(VaultError, match=r"devices.cam-2 holds device_id 'cam-1'"):
        Vault.open(vault.path, PASS)


def test_rotation_confirm_and_revoke_on_the_record():
    dev = sample_device()
    first = dev.generation()
    dev.add_generation(sample_generation(2, "pending"), first.model_source)
    with pytest.raises(VaultError, match="already has a pending key set"):
        dev.require_rotatable()
    assert dev.select("pending").generation == 2 and dev.summary()["pending"] == dev.generations[1].key_fingerprint
    assert dev.confirm(dev.generations[1].key_fingerprint[:8]) is True
    assert (first.state, dev.generation().generation) == ("retired", 2) and first.retired and dev.generations[1].confirmed
    assert dev.confirm(dev.generations[1].key_fingerprint) is False, "confirming the active key set changes nothing"
    with pytest.raises(VaultError, match="is retired"):
        dev.select(first.key_fingerprint)
    with pytest.raises(VaultError, match="is retired, not pending"):
        dev.confirm(first.key_fingerprint)
    dev.revoke()
    assert dev.state == "revoked" and dev.revoked and {g.state for g in dev.generations} == {"revoked"}
    with pytest.raises(VaultError, match="already revoked"):
        dev.revoke()
    with pytest.raises(VaultError, match="has no active key set \\(it is revoked\\)"):
        dev.generation()


def test_public_view_hides_secrets_unless_revealed():
    dev = sample_device(device_private="cHJpdmF0ZQ==")
    hidden = dev.public_view(reveal=False)
    assert "device_private" not in hidden and not {"secret", "keyset", "model_sealed", "canary"} & set(hidden["generations"][0])
    shown = dev.public_view(reveal=True)
    assert shown["device_private"] == "cHJpdmF0ZQ==" and shown["generations"][0]["secret_hex"] == "01" * 32
    assert dev.to_json()["generations"][0]["secret"], "views never change the record"


def test_lifecycle_services_without_the_cli(tmp_path):
    vault, pub = lifecycle.init_vault(tmp_path / "v.kcv", PASS)
    assert pub.read_text().strip() and audit.read(vault)[0][0]["action"] == "init"
    with Vault.edit(vault.path, PASS) as v:
        dev = sample_device("cam-1")
        dev.generations.append(sample_generation(2, "pending"))
        v.add_device(copy.deepcopy(dev))
        with pytest.raises(VaultError, match="already provisioned"):
            v.add_device(dev)
    with Vault.edit(vault.path, PASS) as v:
        assert lifecycle.confirm(v, "cam-1") == (dev.generations[1].key_fingerprint, True)
        assert not lifecycle.confirm_running(v, "cam-1", dev.generations[1].key_fingerprint, by="test")
        assert not lifecycle.confirm_running(v, "cam-unknown", "00", by="test")
    with Vault.edit(vault.path, PASS) as v:
        assert lifecycle.revoke(v, "cam-1", "stolen").state == "revoked"
    opened = Vault.open(vault.path, PASS)
    assert opened.device("cam-1").state == "revoked"
    entries, problems = audit.read(opened)
    assert problems == [] and [e["action"] for e in entries] == ["init", "confirm", "revoke"]
