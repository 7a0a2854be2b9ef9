"""The audit log: append-only, hash-chained, MAC'd; edits, deletions and truncation are reported."""
from __future__ import annotations

import json

import pytest

from keys import audit
from keys.vault import Vault
from tests.kits.records import sample_device


@pytest.fixture
def logged(tmp_path):
    vault = Vault.create(tmp_path / "v.kcv", "audit-test-pass")
    for n in range(4):
        vault.add_device(sample_device(f"cam-{n}"))
        audit.record(vault, "provision", f"cam-{n}", profile="stem")
    vault.save()
    return vault, audit.audit_path(vault.path)


def test_intact_log_reads_clean(logged):
    vault, path = logged
    entries, problems = audit.read(vault)
    assert problems == [] and [e["device"] for e in entries] == ["cam-0", "cam-1", "cam-2", "cam-3"]
    assert (path.stat().st_mode & 0o777) == 0o600


def test_edited_entry_is_detected(logged):
    vault, path = logged
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["device"] = "cam-evil"
    lines[1] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    problems = audit.read(vault)[1]
    assert any("line 2: MAC mismatch" in p for p in problems)
    assert any("line 3: hash chain broken" in p for p in problems)


def test_deleted_entry_is_detected(logged):
    vault, path = logged
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + lines[2:]))
    assert any("hash chain broken" in p for p in audit.read(vault)[1])


def test_truncated_log_is_detected(logged):
    vault, path = logged
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    assert any("entries were removed" in p for p in audit.read(vault)[1])


def test_a_change_that_is_never_saved_leaves_no_entry(logged):
    """Entries are appended only when the vault is saved (issue 16: no entry for an uncommitted change)."""
    vault, path = logged
    before = path.read_bytes()
    audit.record(vault, "rotate", "cam-0")          # vault not saved: simulated crash
    assert path.read_bytes() == before
    reopened = Vault.open(vault.path, "audit-test-pass")
    audit.record(reopened, "revoke", "cam-0")
    reopened.save()
    entries, problems = audit.read(reopened)
    assert problems == [] and [e["action"] for e in entries][-2:] == ["provision", "revoke"]


def test_a_failed_vault_save_takes_its_entries_back(logged, monkeypatch):
    vault, path = logged
    before, head = path.read_bytes(), dict(vault.data["audit"])
    audit.record(vault, "rotate", "cam-1")

    def full(*_args, **_kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("keys.vault.atomic_write", full)
    with pytest.raises(OSError):
        vault.save()
    assert path.read_bytes() == before and vault.data["audit"] == head


def test_entry_for_a_device_the_vault_does_not_hold_is_a_problem(logged):
    vault, path = logged
    audit.record(vault, "provision", "cam-ghost")   # recorded, but the device never made it into the vault
    vault.save()
    problems = audit.read(vault)[1]
    assert any("cam-ghost" in p and "does not hold" in p for p in problems)
