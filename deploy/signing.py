"""Bundle signatures (Ed25519) and secrets sealed to one device (X25519 + HKDF-SHA256 + AES-256-GCM).

Device side and host side share this module; it imports only `cryptography`.
The bundle-signing key is separate from every sensor/model key: it only signs manifests.
"""
from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.errors import KeycamError

SEAL_ALG = "X25519-HKDF-SHA256-AES256GCM"
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SignatureError(KeycamError):
    """A signature or a sealed secret does not verify."""


def raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def raw_public(key) -> bytes:
    """Raw 32-byte public key of a private or public Ed25519/X25519 key."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    return pub.public_bytes(*_RAW)


def public_key_id(pub) -> str:
    """Short id of a public key: first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(raw_public(pub)).hexdigest()[:16]


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


def _seal_key(shared: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"keycam sealed secret v1\x00" + context).derive(shared)


def seal(device_public_raw: bytes, plaintext: bytes, context: str) -> bytes:
    """Encrypt `plaintext` so that only the holder of the device's X25519 private key can read it.

    Output: ephemeral public key (32) | nonce (12) | AES-GCM ciphertext+tag. `context` (device id and
    file name) is bound in as HKDF info and associated data.
    """
    eph = X25519PrivateKey.generate()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(device_public_raw))
    nonce = os.urandom(12)
    ctx = context.encode()
    return raw_public(eph) + nonce + AESGCM(_seal_key(shared, ctx)).encrypt(nonce, plaintext, ctx)


def unseal(device_private: X25519PrivateKey, blob: bytes, context: str) -> bytes:
    """Decrypt a `seal` output with the device's private key; anything wrong raises SignatureError."""
    if len(blob) < 32 + 12 + 16:
        raise SignatureError(f"sealed secret for {context} is truncated")
    shared = device_private.exchange(X25519PublicKey.from_public_bytes(blob[:32]))
    ctx = context.encode()
    try:
        return AESGCM(_seal_key(shared, ctx)).decrypt(blob[32:44], blob[44:], ctx)
    except InvalidTag as exc:
        raise SignatureError(f"sealed secret for {context} cannot be opened with this device's key "
                             "(sealed to another device, or altered)") from exc
