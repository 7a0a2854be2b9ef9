"""Append-only audit log of every provisioning action (JSON lines, hash-chained and MAC'd).

Each line: {"seq", "ts", "user", "action", "device", "details", "prev", "mac"} where `prev` is the
SHA-256 of the previous line and `mac` an HMAC-SHA256 (key kept inside the encrypted vault) over the
rest of the entry. Editing, reordering or deleting a line breaks the chain or a MAC; the vault
stores the head (last seq and line hash), so cutting lines off the end is detected too.
An entry is appended only when the vault change it records is saved (`record` queues it on the
vault; a failed save, e.g. on a full disk, takes the line back), and `read` reports entries naming
a device the vault does not hold.
"""
from __future__ import annotations

import errno
import fcntl
import getpass
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from pathlib import Path

from base.atomic import write_error
from base.clock import now_iso
from keys.fields import b64d, b64e
from keys.vault import Vault

GENESIS = "0" * 64


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


def record(vault: Vault, action: str, device: str | None, **details) -> None:
    """Queue one entry: it is appended (and the head kept in the vault advanced) when the vault is
    saved, and taken back if that save fails."""
    key = _audit_key(vault)
    vault.on_save(lambda: _append(vault, key, action, device, details))


def _append(vault: Vault, key: bytes, action: str, device: str | None, details: dict) -> Callable[[], None]:
    """Append one entry now; return the undo (cut the log back and restore the head)."""
    path = audit_path(vault.path)
    head = dict(vault.data["audit"])
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        lines = Path(path).read_bytes().splitlines(keepends=True)
        size = sum(map(len, lines))
        prev = hashlib.sha256(lines[-1]).hexdigest() if lines else GENESIS
        entry = {"seq": len(lines) + 1, "ts": now_iso(), "user": getpass.getuser(), "action": action,
                 "device": device, "details": details, "prev": prev}
        entry["mac"] = _mac(key, entry)
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            raise write_error(path, exc) from exc
    finally:
        os.close(fd)
    vault.data["audit"].update(seq=entry["seq"], head=hashlib.sha256(line).hexdigest())

    def undo() -> None:
        os.truncate(path, size)
        vault.data["audit"] = head
    return undo


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
        if entry.get("device") is not None and entry["device"] not in vault.devices:
            problems.append(f"line {n}: {entry.get('action')} of device {entry['device']!r}, which the vault "
                            "does not hold (an entry for a change that was never saved)")
        entries.append(entry)
        prev = hashlib.sha256(line).hexdigest()
    head = vault.data["audit"]
    if len(lines) < head["seq"]:
        problems.append(f"log has {len(lines)} entries but the vault recorded {head['seq']}: entries were removed")
    elif len(lines) >= head["seq"] > 0 and hashlib.sha256(lines[head["seq"] - 1]).hexdigest() != head["head"]:
        problems.append(f"entry {head['seq']} differs from the one the vault recorded")
    return entries, problems
