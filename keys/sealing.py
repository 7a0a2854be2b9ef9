"""Files sealed to one device: X25519 + HKDF-SHA256 + AES-256-GCM behind a self-describing header.

A keyed model, a sensor key and the canary frames are key material: outside the device's RAM they
exist only in this form (in the vault, in bundles, in the device's A/B slots). Layout (version 1):

    MAGIC b"KCAMSEAL" | version u8 | recipient key id (8 bytes) | context length u16 LE | context UTF-8
    | ephemeral X25519 public key (32) | nonce (12) | AES-256-GCM ciphertext + tag (16)

The recipient key id is the first 8 bytes of SHA-256 of the device's X25519 public key, so a loader can
say *which* key a file was sealed to. The context ("<device id>/<role>") is HKDF info, and the whole
header is AES-GCM associated data: a file moved to another device or role, or altered, does not open.
Imports only `cryptography` (device and host side share it; no deploy/ import).
"""
from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from base.errors import KeycamError
from base.signing import public_key_id, raw_public

MAGIC = b"KCAMSEAL"
VERSION = 1
SEAL_ALG = "X25519-HKDF-SHA256-AES256GCM"
ROLE_MODEL, ROLE_SENSOR_KEY, ROLE_CANARY, ROLE_PREPROCESS = "model", "sensor-key", "canary", "preprocess"
_FIXED = len(MAGIC) + 1 + 8 + 2
_TAIL = 32 + 12 + 16


class SealedFileError(KeycamError):
    """A sealed file is clear, foreign, truncated, altered, or sealed to another device key."""


def context_for(device_id: str, role: str) -> str:
    """The context a device's file of one role is sealed under."""
    return f"{device_id}/{role}"


def is_clear_tflite(blob: bytes) -> bool:
    """A TFLite flatbuffer carries its file identifier `TFL3` at byte 4."""
    return blob[4:8] == b"TFL3"


def is_sealed(blob: bytes) -> bool:
    return blob[:len(MAGIC)] == MAGIC


def _seal_key(shared: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"keycam sealed file v1\x00" + context).derive(shared)


def seal(device_public_raw: bytes, plaintext: bytes, context: str) -> bytes:
    """Encrypt `plaintext` so that only the holder of the device's X25519 private key can read it."""
    ctx = context.encode()
    if len(ctx) > 0xFFFF:
        raise SealedFileError("seal context is too long")
    header = (MAGIC + bytes([VERSION]) + bytes.fromhex(public_key_id(device_public_raw))
              + struct.pack("<H", len(ctx)) + ctx)
    eph = X25519PrivateKey.generate()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(device_public_raw))
    nonce = os.urandom(12)
    return header + raw_public(eph) + nonce + AESGCM(_seal_key(shared, ctx)).encrypt(nonce, plaintext, header)


def _header(blob: bytes, what: str) -> tuple[str, str, int]:
    """(recipient key id, context, header length) of a sealed file; clear or foreign files raise."""
    if not is_sealed(blob):
        if is_clear_tflite(blob):
            raise SealedFileError(f"{what} is a clear TFLite model, not a file sealed to this device: keycam "
                                  "loads keyed models only sealed (build it with `keycam deploy build`)")
        raise SealedFileError(f"{what} is not a keycam sealed file (no {MAGIC.decode()} header): "
                              "a clear, foreign or corrupted file")
    if len(blob) < _FIXED:
        raise SealedFileError(f"{what} is truncated")
    if blob[len(MAGIC)] != VERSION:
        raise SealedFileError(f"{what} has sealed-file version {blob[len(MAGIC)]}; this keycam reads {VERSION}")
    key_id = blob[len(MAGIC) + 1:len(MAGIC) + 9].hex()
    (n,) = struct.unpack("<H", blob[_FIXED - 2:_FIXED])
    if len(blob) < _FIXED + n + _TAIL:
        raise SealedFileError(f"{what} is truncated")
    try:
        context = blob[_FIXED:_FIXED + n].decode()
    except UnicodeDecodeError as exc:
        raise SealedFileError(f"{what} has a corrupted header") from exc
    return key_id, context, _FIXED + n


def recipient_key_id(blob: bytes, what: str = "sealed file") -> str:
    """The id of the device public key a sealed file was sealed to."""
    return _header(blob, what)[0]


def unseal(device_private: X25519PrivateKey, blob: bytes, context: str, what: str = "sealed file") -> bytes:
    """Decrypt a `seal` output into memory; a clear, foreign, misplaced or altered file raises SealedFileError."""
    key_id, found, n = _header(blob, what)
    if found != context:
        raise SealedFileError(f"{what} is sealed for {found!r}, expected {context!r} "
                              "(a file of another device or of another role)")
    mine = public_key_id(device_private.public_key())
    if key_id != mine:
        raise SealedFileError(
            f"{what} is sealed to device key {key_id}, but this device's key is {mine}: the device was given "
            "a new key pair after the file was made (a later `keycam keys export --new-device-key`), or the "
            "file is for another device. Rebuild it from the vault for this device's key (the vault records "
            "the key of the last export)")
    body = blob[n:]
    shared = device_private.exchange(X25519PublicKey.from_public_bytes(body[:32]))
    try:
        return AESGCM(_seal_key(shared, context.encode())).decrypt(body[32:44], body[44:], blob[:n])
    except InvalidTag as exc:
        raise SealedFileError(f"{what} cannot be opened with this device's key {mine}: it was altered "
                              "or corrupted") from exc
