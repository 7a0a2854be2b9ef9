"""Append-only audit log of every provisioning action (JSON lines, hash-chained and MAC'd).

Each line: {"seq", "ts", "user", "action", "device", "details", "prev", "mac"} where `prev` is the
SHA-256 of the previous line and `mac` an HMAC-SHA256 (key kept inside the encrypted vault) over the
rest of the entry. Editing, reordering or deleting a line breaks the chain or a MAC; the vault
stores the head (last seq and line hash), so cutting lines off the end is detected too.
"""
from __future__ import annotations

import fcntl
import getpass
import hashlib
import hmac
import json
import os
from pathlib import Path

from edge.errors import KeycamError
from keys.vault import Vault, b64d, b64e, now_iso

GENESIS = "0" * 64


class AuditError(KeycamError):
    """The audit log is unreadable or has been altered."""


def audit_path(vault_path: Path) -> Path:
    """Where a vault's audit log lives: beside it, <vault>.audit.jsonl."""
    vault_path = Path(vault_path)
    return vault_path.with_name(vault_path.name + ".audit.jsonl")


def _audit_key(vault: Vault) -> bytes:
    if "audit" not in vault.data:
        vault.data["audit"] = {"key": b64e(os.urandom(32)), "seq": 0, "head": GENESIS}
    return b64d(vault.data["audit"]["key"], "audit.key")


def _mac(key: bytes, entry: dict) -> str:
    body = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def record(vault: Vault, action: str, device: str | None, **details) -> dict:
    """Append one entry and advance the head kept in the vault (the caller saves the vault)."""
    key = _audit_key(vault)
    path = audit_path(vault.path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        lines = Path(path).read_bytes().splitlines(keepends=True)
        prev = hashlib.sha256(lines[-1]).hexdigest() if lines else GENESIS
        entry = {"seq": len(lines) + 1, "ts": now_iso(), "user": getpass.getuser(), "action": action,
                 "device": device, "details": details, "prev": prev}
        entry["mac"] = _mac(key, entry)
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    vault.data["audit"].update(seq=entry["seq"], head=hashlib.sha256(line).hexdigest())
    return entry


def read(vault: Vault) -> tuple[list[dict], list[str]]:
    """Return (entries, problems): every chain, MAC, sequence or head mismatch is one problem line."""
    path = audit_path(vault.path)
    if not path.exists():
        return [], ([] if vault.data.get("audit", {}).get("seq", 0) == 0 else [f"audit log {path} is missing"])
    key = _audit_key(vault)
    entries, problems, prev, lines = [], [], GENESIS, path.read_bytes().splitlines(keepends=True)
    for n, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(f"line {n}: not valid JSON")
            prev = hashlib.sha256(line).hexdigest()
            continue
        if entry.get("prev") != prev:
            problems.append(f"line {n}: hash chain broken (a line before it was changed or removed)")
        if entry.get("seq") != n:
            problems.append(f"line {n}: sequence number {entry.get('seq')} out of order")
        if not hmac.compare_digest(str(entry.get("mac", "")), _mac(key, entry)):
            problems.append(f"line {n}: MAC mismatch (the entry was edited)")
        entries.append(entry)
        prev = hashlib.sha256(line).hexdigest()
    head = vault.data["audit"]
    if len(lines) < head["seq"]:
        problems.append(f"log has {len(lines)} entries but the vault recorded {head['seq']}: entries were removed")
    elif len(lines) >= head["seq"] > 0 and hashlib.sha256(lines[head["seq"] - 1]).hexdigest() != head["head"]:
        problems.append(f"entry {head['seq']} differs from the one the vault recorded")
    return entries, problems
