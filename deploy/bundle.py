"""Signed bundles: an uncompressed tar whose first two members are manifest.json and manifest.sig.

`verify_bundle` checks the Ed25519 signature of the manifest and then streams every member through
SHA-256 without writing anything to disk; only a verified bundle is ever unpacked (`extract`, which
hashes again while writing). Member names are flat, regular files only, exactly the manifest's set.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

from base.atomic import atomic_output
from base.signing import public_key_id, sign, verify
from deploy.manifest import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE, BundleError, Manifest

CHUNK = 1 << 16


def write_bundle(path: str | Path, manifest: Manifest, payload: dict[str, bytes], private_key) -> Manifest:
    """Fill the manifest's file table from `payload`, sign it, and write the bundle tar atomically
    (a failed write, e.g. a full disk, leaves no partial file and raises FileWriteError)."""
    manifest.files = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                      for name, data in sorted(payload.items())}
    manifest.signing_key_id = public_key_id(private_key.public_key())
    manifest.validate()
    blob = manifest.to_bytes()
    members = [(MANIFEST, blob), (SIGNATURE, sign(private_key, blob))] + sorted(payload.items())
    with atomic_output(path, 0o644) as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return manifest


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{path} is not a readable bundle (truncated or not a tar): {exc}") from exc


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isfile() or member.size > limit:
        raise BundleError(f"bundle member {member.name!r} is not a small regular file")
    data = tar.extractfile(member).read()
    if len(data) != member.size:
        raise BundleError(f"bundle member {member.name!r} is truncated")
    return data


def read_manifest(path: str | Path, trusted_public: bytes) -> Manifest:
    """Read the first two members and verify the signature; nothing else is read or written."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"bundle not found: {path}")
    try:
        with _open(path) as tar:
            first, second = tar.next(), tar.next()
            if first is None or second is None or (first.name, second.name) != (MANIFEST, SIGNATURE):
                raise BundleError(f"{path}: a bundle must start with {MANIFEST} and {SIGNATURE}")
            blob = _read_small(tar, first, MAX_MANIFEST_BYTES)
            sig = _read_small(tar, second, 64)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{path} is truncated or corrupted: {exc}") from exc
    verify(trusted_public, blob, sig)
    return Manifest.from_bytes(blob)


def _members(tar: tarfile.TarFile, manifest: Manifest):
    """Yield the payload members in order, enforcing the manifest's name set and sizes."""
    seen: set[str] = set()
    for i, member in enumerate(tar):
        if i < 2:
            continue
        name = member.name
        if name not in manifest.files or name in seen:
            raise BundleError(f"bundle member {name!r} is not in the manifest (or repeated)")
        if not member.isfile() or member.size != manifest.files[name]["size"]:
            raise BundleError(f"bundle member {name!r} is not a regular file of the manifest's size")
        seen.add(name)
        yield member
    missing = set(manifest.files) - seen
    if missing:
        raise BundleError(f"bundle is missing {', '.join(sorted(missing))} (truncated upload?)")


def _stream(tar: tarfile.TarFile, member: tarfile.TarInfo, expected: str, sink: Callable[[bytes], None]) -> None:
    h, src, got = hashlib.sha256(), tar.extractfile(member), 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        got += len(chunk)
        sink(chunk)
    if got != member.size or h.hexdigest() != expected:
        raise BundleError(f"bundle file {member.name!r} does not match its sha256 in the manifest (tampered?)")


def verify_bundle(path: str | Path, trusted_public: bytes) -> Manifest:
    """Signature first, then the sha256 and size of every file, streamed; raises BundleError/SignatureError."""
    manifest = read_manifest(path, trusted_public)
    try:
        with _open(Path(path)) as tar:
            for member in _members(tar, manifest):
                _stream(tar, member, manifest.files[member.name]["sha256"], lambda _c: None)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{path} is truncated or corrupted: {exc}") from exc
    return manifest


def extract(path: str | Path, manifest: Manifest, dest: Path,
            transform: Callable[[str, bytes], bytes] | None = None) -> None:
    """Unpack a verified bundle's files into `dest` (hashing again), fsync each; `transform` may rewrite
    a file's content (the agent opens sealed secrets with it) before it is written."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with _open(Path(path)) as tar:
            for member in _members(tar, manifest):
                parts: list[bytes] = []
                _stream(tar, member, manifest.files[member.name]["sha256"], parts.append)
                data = b"".join(parts)
                name = member.name
                if transform is not None:
                    data = transform(name, data)
                _write_file(dest / name, data, 0o600 if name in manifest.secrets else 0o644)
        _write_file(dest / MANIFEST, manifest.to_bytes(), 0o644)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path} is truncated or corrupted: {exc}") from exc


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())

