"""The vault file: encryption at rest, passphrase checks, tamper detection, atomic writes."""
from __future__ import annotations

import json
import os

import pytest

from keys.fields import VaultError
from keys.vault import Vault
from tests.kits.records import sample_device

PASS = "vault-test-passphrase"


@pytest.fixture
def vault(tmp_path):
    v = Vault.create(tmp_path / "v.kcv", PASS)
    v.add_device(sample_device("cam-1", config={"marker": "top-secret-marker"}))
    v.save()
    return v


def test_roundtrip_mode_and_no_plaintext(vault):
    assert (vault.path.stat().st_mode & 0o777) == 0o600
    raw = vault.path.read_bytes()
    assert b"top-secret-marker" not in raw and b"cam-1" not in raw
    again = Vault.open(vault.path, PASS)
    assert again.devices["cam-1"].config == {"marker": "top-secret-marker"}
    assert again.signing_private().public_key() is not None


def test_wrong_passphrase_is_a_clear_error(vault):
    with pytest.raises(VaultError, match="wrong passphrase"):
        Vault.open(vault.path, PASS + "x")


def _rewrite(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_tampered_ciphertext_and_header_are_detected(vault):
    def flip(doc):
        ct = bytearray(doc["ciphertext"].encode())
        ct[10] = ord("A") if ct[10] != ord("A") else ord("B")
        doc["ciphertext"] = ct.decode()
    _rewrite(vault.path, flip)
    with pytest.raises(VaultError, match="tampered"):
        Vault.open(vault.path, PASS)


def test_tampered_header_is_detected(vault):
    _rewrite(vault.path, lambda doc: doc["kdf"].update(comment="x"))   # same key, different header
    with pytest.raises(VaultError, match="tampered"):
        Vault.open(vault.path, PASS)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(version=3), "format version 3"),
    (lambda d: d.update(format="other"), "not a keycam vault"),
    (lambda d: d.update(cipher="ROT13"), "unsupported"),
    (lambda d: d.pop("nonce"), "malformed"),
])
def test_bad_formats_are_refused(vault, change, message):
    _rewrite(vault.path, change)
    with pytest.raises(VaultError, match=message):
        Vault.open(vault.path, PASS)


def test_truncated_or_missing_vault(vault, tmp_path):
    vault.path.write_bytes(vault.path.read_bytes()[:100])
    with pytest.raises(VaultError, match="unreadable or corrupted"):
        Vault.open(vault.path, PASS)
    with pytest.raises(VaultError, match="keycam keys init"):
        Vault.open(tmp_path / "nope.kcv", PASS)


def test_create_refuses_overwrite_and_short_passphrase(vault, tmp_path):
    with pytest.raises(VaultError, match="already exists"):
        Vault.create(vault.path, PASS)
    with pytest.raises(VaultError, match="at least"):
        Vault.create(tmp_path / "w.kcv", "short")


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_a_crash_while_saving_leaves_the_old_vault(vault, monkeypatch, fail_in):
    before = vault.path.read_bytes()
    vault.add_device(sample_device("cam-2"))

    def boom(*a, **k):
        raise OSError("simulated power loss")
    monkeypatch.setattr(os, fail_in, boom)
    with pytest.raises(OSError, match="power loss"):
        vault.save()
    monkeypatch.undo()
    assert vault.path.read_bytes() == before
    assert sorted(p.name for p in vault.path.parent.iterdir()) == ["v.kcv"], "no temp file may remain"
    assert "cam-2" not in Vault.open(vault.path, PASS).devices


def test_edit_saves_only_on_success(vault):
    with pytest.raises(RuntimeError):
        with Vault.edit(vault.path, PASS) as v:
            v.add_device(sample_device("cam-3"))
            raise RuntimeError("abort")
    assert "cam-3" not in Vault.open(vault.path, PASS).devices
    with Vault.edit(vault.path, PASS) as v:
        v.add_device(sample_device("cam-3"))
    assert "cam-3" in Vault.open(vault.path, PASS).devices
