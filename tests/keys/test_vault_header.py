"""Issue 16 defect 3: a tampered vault header is refused before any key derivation and reported as
tampering (never a hang, a MemoryError or "wrong passphrase"); vaults written by format 1 still open."""
from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest

from keys.fields import VaultError
from keys.vault import Vault

PASS = "vault-header-passphrase"
V1_FIXTURE = Path(__file__).parent / "data" / "vault-v1.kcv"   # written by the format-1 Vault.save
V1_PASS = "fixture-passphrase-v1"


@pytest.fixture
def vault_path(tmp_path):
    return Vault.create(tmp_path / "v.kcv", PASS).path


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _flip_salt(doc: dict) -> None:
    salt = bytearray(base64.b64decode(doc["kdf"]["salt"]))
    salt[3] ^= 0x01
    doc["kdf"]["salt"] = base64.b64encode(bytes(salt)).decode()


@pytest.mark.parametrize("change, message", [
    (lambda d: d["kdf"].update(p=100000), r"kdf\.p .*100000.*outside"),          # used to hang
    (lambda d: d["kdf"].update(n=2 ** 30), r"kdf\.n .*outside"),                 # used to raise MemoryError
    (lambda d: d["kdf"].update(r=800000), r"kdf\.r .*outside"),                  # used to raise MemoryError
    (lambda d: d["kdf"].update(n=1024), r"kdf\.n .*outside"),                    # was "wrong passphrase"
    (lambda d: d["kdf"].update(n=3 * 2 ** 15), r"kdf\.n .*power of two"),
    (lambda d: d["kdf"].update(n="32768"), r"kdf\.n .*integer"),
    (lambda d: d["kdf"].update(p=True), r"kdf\.p .*integer"),
    (lambda d: d["kdf"].update(salt=base64.b64encode(b"x" * 8).decode()), r"salt .*8 bytes"),
])
def test_kdf_parameters_out_of_range_are_refused_before_deriving(vault_path, change, message):
    _edit(vault_path, change)
    t0 = time.monotonic()
    with pytest.raises(VaultError, match=message) as info:
        Vault.open(vault_path, PASS)
    assert time.monotonic() - t0 < 2.0                      # refused without running scrypt
    assert "wrong passphrase" not in str(info.value)


@pytest.mark.parametrize("change", [
    _flip_salt,
    lambda d: d["kdf"].update(n=2 ** 14),                    # lowered, but inside the accepted range
    lambda d: d["kdf"].update(p=2),
    lambda d: d["kdf"].update(r=4),
    lambda d: d.update(check=base64.b64encode(b"\0" * 32).decode()),
])
def test_header_edits_in_range_are_reported_as_tampering(vault_path, change):
    _edit(vault_path, change)
    with pytest.raises(VaultError, match="header .*tampered") as info:
        Vault.open(vault_path, PASS)
    assert "wrong passphrase" not in str(info.value)


def test_wrong_passphrase_is_still_told_apart(vault_path):
    with pytest.raises(VaultError, match="wrong passphrase"):
        Vault.open(vault_path, PASS + "x")


def test_format_1_vault_opens_and_is_rewritten_with_an_authenticated_header(tmp_path):
    path = tmp_path / "old.kcv"
    shutil.copy(V1_FIXTURE, path)
    assert json.loads(path.read_text())["version"] == 1
    vault = Vault.open(path, V1_PASS)
    assert vault.devices["cam-old"].extra == {"marker": "written-by-vault-format-1"}   # unknown fields are kept
    assert vault.devices["cam-old"].generations[0].model_int8 is not None            # the older clear model
    vault.save()
    doc = json.loads(path.read_text())
    assert doc["version"] == 2 and doc["header_sha256"]
    again = Vault.open(path, V1_PASS).devices["cam-old"]
    assert again.to_json() == vault.devices["cam-old"].to_json() and again.extra["marker"] == "written-by-vault-format-1"


def test_format_1_vault_with_absurd_kdf_is_refused_before_deriving(tmp_path):
    path = tmp_path / "old.kcv"
    shutil.copy(V1_FIXTURE, path)
    _edit(path, lambda d: d["kdf"].update(p=100000))
    with pytest.raises(VaultError, match=r"kdf\.p"):
        Vault.open(path, V1_PASS)


def test_relabelling_a_format_2_vault_as_format_1_does_not_skip_the_header_check(vault_path):
    def downgrade(doc):
        doc["version"] = 1
        doc["kdf"]["p"] = 2
    _edit(vault_path, downgrade)
    with pytest.raises(VaultError, match="header .*tampered"):
        Vault.open(vault_path, PASS)
