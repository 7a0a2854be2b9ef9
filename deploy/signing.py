"""Bundle signatures (Ed25519); the sealing of files to one device lives in keys.sealing (re-exported).

Device side and host side share this module; it imports only `cryptography` and keys.sealing.
The bundle-signing key is separate from every sensor/model key: it only signs manifests.
"""
from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import KeycamError
from keys.sealing import SEAL_ALG, public_key_id, raw_private, raw_public

__all__ = ["SEAL_ALG", "SignatureError", "decode_public", "encode_public", "public_key_id", "raw_private",
           "raw_public", "sign", "verify"]


class SignatureError(KeycamError):
    """A signature does not verify, or a public key is malformed."""


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
