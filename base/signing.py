"""Signing primitives (Ed25519) and raw key forms shared by the vault, bundles and sealed files.

Device side and host side share this module; it imports only `cryptography` and base.errors.
The bundle-signing key is separate from every sensor/model key: it only signs manifests.
"""
from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from base.errors import KeycamError

__all__ = ["SignatureError", "decode_public", "encode_public", "public_key_id", "raw_private",
           "raw_public", "sign", "verify"]

_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SignatureError(KeycamError):
    """A signature does not verify, or a public key is malformed."""


def raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    """Raw 32-byte private key (the form the vault and key stores keep)."""
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def raw_public(key) -> bytes:
    """Raw 32-byte public key of a private or public Ed25519/X25519 key."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    return pub.public_bytes(*_RAW)


def public_key_id(pub) -> str:
    """Short id of a public key (object or raw bytes): first 16 hex digits of SHA-256 of its raw bytes."""
    raw = pub if isinstance(pub, bytes) else raw_public(pub)
    return hashlib.sha256(raw).hexdigest()[:16]


def encode_public(raw: bytes) -> str:
    """Text form of a raw public key (one base64 line), as written to *.pub files."""
    return base64.b64encode(raw).decode("ascii")


def decode_public(text: str | bytes, what: str) -> bytes:
    """Parse a base64 public key (the *.pub text form) into 32 raw bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise SignatureError(f"{what} is not a base64 public key") from exc
    if len(raw) != 32:
        raise SignatureError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def sign(private: Ed25519PrivateKey, message: bytes) -> bytes:
    return private.sign(message)


def verify(public_raw: bytes, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signature` is a valid Ed25519 signature of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("bad bundle signature: the manifest was not signed by the trusted "
                             f"signing key {public_key_id(Ed25519PublicKey.from_public_bytes(public_raw))}") from exc
