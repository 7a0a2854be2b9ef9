"""Versioned, pickle-free binary container for keys and key sets.

Layout: MAGIC (8 bytes) | format version (u16 LE) | header length (u32 LE) | header (UTF-8 JSON,
sorted keys) | array data | SHA-256 of everything before it (32 bytes). The header lists every
array's name, dtype, shape, offset and length. Serialisation is canonical: equal contents give equal
bytes, so the SHA-256 of the bytes is a fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from base.errors import KeycamError

FORMAT_VERSION = 1
_ALLOWED_DTYPES = {"<f8", "<f4", "<i8", "<i4", "|u1", "|i1", "<u2"}


class KeyFileError(KeycamError):
    """A key file is corrupted, truncated, of an unknown version or of the wrong kind."""


def pack(magic: bytes, header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise a JSON-able header and named numpy arrays into canonical bytes."""
    table, chunks, offset = {}, [], 0
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        arr = arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.byteorder == ">" else arr
        if arr.dtype.str not in _ALLOWED_DTYPES:
            raise TypeError(f"array {name!r} has unsupported dtype {arr.dtype}")
        data = arr.tobytes()
        table[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset, "nbytes": len(data)}
        chunks.append(data)
        offset += len(data)
    head = json.dumps({"meta": header, "arrays": table}, sort_keys=True, separators=(",", ":")).encode()
    body = magic + struct.pack("<HI", FORMAT_VERSION, len(head)) + head + b"".join(chunks)
    return body + hashlib.sha256(body).digest()


def unpack(magic: bytes, blob: bytes, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse bytes made by `pack`, checking magic, version, lengths and the checksum."""
    fixed = len(magic) + 6
    if len(blob) < fixed + 32:
        raise KeyFileError(f"{what} is truncated ({len(blob)} bytes)")
    if blob[:len(magic)] != magic:
        raise KeyFileError(f"{what} is not a keycam {magic.decode(errors='replace').strip()} file (bad magic)")
    version, head_len = struct.unpack("<HI", blob[len(magic):fixed])
    if version != FORMAT_VERSION:
        raise KeyFileError(f"{what} has format version {version}; this keycam reads version {FORMAT_VERSION}")
    if hashlib.sha256(blob[:-32]).digest() != blob[-32:]:
        raise KeyFileError(f"{what} is corrupted or truncated (checksum mismatch)")
    try:
        head = json.loads(blob[fixed:fixed + head_len])
        data = blob[fixed + head_len:-32]
        arrays = {}
        for name, spec in head["arrays"].items():
            if spec["dtype"] not in _ALLOWED_DTYPES or spec["offset"] + spec["nbytes"] > len(data):
                raise ValueError(f"bad array entry {name!r}")
            arr = np.frombuffer(data, dtype=spec["dtype"], count=spec["nbytes"] // np.dtype(spec["dtype"]).itemsize,
                                offset=spec["offset"])
            arrays[name] = arr.reshape(spec["shape"])
        return head["meta"], arrays
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{what} has a malformed header: {exc}") from exc


def fingerprint(blob: bytes) -> str:
    """Hex SHA-256 of canonical bytes."""
    return hashlib.sha256(blob).hexdigest()
