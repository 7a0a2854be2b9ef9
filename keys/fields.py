"""VaultError and the base64 codec of the vault's binary fields (shared by the vault file and its records)."""
from __future__ import annotations

import base64

from base.errors import KeycamError


class VaultError(KeycamError):
    """The vault is missing, unreadable, tampered, or the passphrase is wrong."""


def b64e(data: bytes) -> str:
    """Binary vault field -> base64 text."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: str, what: str) -> bytes:
    """Base64 text of the vault field `what` -> bytes; anything else raises VaultError."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, AttributeError) as exc:
        raise VaultError(f"vault field {what} is not valid base64") from exc
