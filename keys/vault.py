"""The provisioning vault: one file, encrypted at rest, holding every device's secrets and keyed models.

File format (version 2): UTF-8 JSON
    {"format": "keycam-vault", "version": 2,
     "kdf": {"name": "scrypt", "salt": b64, "n": 2**15, "r": 8, "p": 1},
     "cipher": "AES-256-GCM", "check": b64, "header_sha256": hex, "nonce": b64, "ciphertext": b64}
The passphrase goes through scrypt to a 256-bit key. `check` (an HMAC of a constant under that key)
tells a wrong passphrase apart from a tampered file; AES-GCM authenticates the payload with the
header (format, version, kdf, cipher) as associated data, so any change to either is detected.
Before anything is derived, the scrypt parameters are bounded (see `check_kdf`) and `header_sha256`
(version 2) is compared with the canonical header; see `header_digest` for what that does and does
not protect. Version 1 files (no digest) still open and are written back as version 2.
The decrypted payload is a JSON object: "devices" (device id -> a `keys.records.DeviceRecord`, read
and checked when the vault opens), "signing", "audit", "mender_signing" and "created".
The file is mode 0600 and every write is atomic (temp file, fsync, rename, fsync of the directory).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from base.atomic import atomic_write
from base.clock import now_iso
from base.signing import public_key_id, raw_private, raw_public
from keys.fields import VaultError, b64d, b64e
from keys.records import DeviceRecord

FORMAT = "keycam-vault"
VERSION = 2
READABLE_VERSIONS = (1, 2)                # version 1: the same file without header_sha256
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
_CHECK_LABEL = b"keycam-vault passphrase check v1"
MIN_PASSPHRASE = 8


# Accepted scrypt parameters. scrypt needs 128 * n * r bytes of memory and time proportional to
# n * r * p, so a header is the one place where a file can make `keys list` hang or exhaust memory.
#   n: a power of two (scrypt requires it) from 2**14, the weakest setting still recommended for
#      interactive use (below it a stolen vault is cheap to brute-force; keycam writes 2**15), to
#      2**20 (1 GiB at r = 8: what a provisioning laptop or a Raspberry Pi can still spare).
#   r: 1..32, the block size; 8 is the standard choice, 32 leaves room for memory-hard tuning.
#   p: 1..16, sequential repetitions (keycam writes 1); 16 keeps the worst case under a minute.
#   salt: 16..64 bytes (16 is the usual minimum for a random salt; more adds nothing).
# Memory is further capped at MAX_KDF_MEMORY (n = 2**20 with r = 32 would need 4 GiB).
KDF_N_RANGE = (2 ** 14, 2 ** 20)
KDF_R_RANGE = (1, 32)
KDF_P_RANGE = (1, 16)
SALT_BYTES_RANGE = (16, 64)
MAX_KDF_MEMORY = 1 << 30


def check_kdf(kdf: object, where: str) -> tuple[bytes, int, int, int]:
    """(salt, n, r, p) of a vault header's kdf block, refusing any value outside the documented range
    before anything is derived (an absurd value means a damaged or tampered header)."""
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise VaultError(f"vault {where} uses an unsupported kdf")
    values = {}
    for name, (lo, hi) in (("n", KDF_N_RANGE), ("r", KDF_R_RANGE), ("p", KDF_P_RANGE)):
        value = kdf.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise VaultError(f"vault {where}: header kdf.{name} must be an integer, got {value!r} "
                             "(the header was damaged or tampered with)")
        if not lo <= value <= hi:
            raise VaultError(f"vault {where}: header kdf.{name} = {value} is outside the accepted range "
                             f"{lo}..{hi} (the header was damaged or tampered with)")
        values[name] = value
    n, r, p = values["n"], values["r"], values["p"]
    if n & (n - 1):
        raise VaultError(f"vault {where}: header kdf.n = {n} is not a power of two (damaged or tampered header)")
    if 128 * n * r > MAX_KDF_MEMORY:
        raise VaultError(f"vault {where}: header kdf n = {n}, r = {r} would need {128 * n * r >> 20} MiB, "
                         f"more than the {MAX_KDF_MEMORY >> 20} MiB accepted (damaged or tampered header)")
    salt = b64d(kdf.get("salt"), "kdf.salt")
    if not SALT_BYTES_RANGE[0] <= len(salt) <= SALT_BYTES_RANGE[1]:
        raise VaultError(f"vault {where}: header kdf.salt has {len(salt)} bytes, accepted are "
                         f"{SALT_BYTES_RANGE[0]}..{SALT_BYTES_RANGE[1]} (damaged or tampered header)")
    return salt, n, r, p


def _derive(passphrase: str, kdf: dict, where: str) -> bytes:
    salt, n, r, p = check_kdf(kdf, where)
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _header_aad(doc: dict) -> bytes:
    head = {k: doc[k] for k in ("format", "version", "kdf", "cipher")}
    return json.dumps(head, sort_keys=True, separators=(",", ":")).encode()


def header_digest(doc: dict) -> str:
    """SHA-256 (hex) of the canonical header: format, version, kdf, cipher and the passphrase check.

    It is checked before any key derivation, so an edited header (a lowered n, a flipped salt byte, a
    changed p, a replaced check) is reported as tampering instead of as a wrong passphrase. It is a
    plain digest, not a MAC: someone who edits the header on purpose can recompute it, and then a
    changed salt or n can only show up as "wrong passphrase" (nothing can tell them apart without the
    key). It does not weaken anything either: AES-GCM still authenticates the payload together with
    the header, and the kdf bounds still apply, so no header makes the vault open with other contents.
    """
    head = {k: doc.get(k) for k in ("format", "version", "kdf", "cipher", "check")}
    return hashlib.sha256(json.dumps(head, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_devices(doc: object, path: Path) -> dict[str, DeviceRecord]:
    """The typed device records of a decrypted payload; a malformed one raises VaultError naming it."""
    if not isinstance(doc, dict):
        raise VaultError(f"vault {path} is malformed: its devices are not a JSON object")
    devices = {}
    for name, entry in doc.items():
        record = DeviceRecord.from_json(entry, f"devices.{name}")
        if record.device_id != name:
            raise VaultError(f"vault record devices.{name} holds device_id {record.device_id!r}")
        devices[name] = record
    return devices


@dataclass
class Vault:
    """Decrypted vault contents plus what is needed to write them back."""
    path: Path
    data: dict                                  # everything but the devices: signing key, audit head, ...
    devices: dict[str, DeviceRecord]
    _key: bytes = field(repr=False)
    _kdf: dict = field(repr=False)
    _on_save: list[Callable[[], Callable[[], None]]] = field(default_factory=list, repr=False)

    # ---- file level -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, passphrase: str) -> Vault:
        """Create a new vault with a fresh bundle-signing key; refuses to overwrite one."""
        path = Path(path)
        if path.exists():
            raise VaultError(f"a vault already exists at {path}; refusing to overwrite it")
        if len(passphrase) < MIN_PASSPHRASE:
            raise VaultError(f"the vault passphrase must have at least {MIN_PASSPHRASE} characters")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        kdf = {"name": "scrypt", "salt": b64e(os.urandom(16)), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
        signing = Ed25519PrivateKey.generate()
        data = {"created": now_iso(),
                "signing": {"private": b64e(raw_private(signing)), "public": b64e(raw_public(signing)),
                            "key_id": public_key_id(signing.public_key()), "created": now_iso()}}
        vault = cls(path, data, {}, _derive(passphrase, kdf, str(path)), kdf)
        vault.save()
        return vault

    @classmethod
    def open(cls, path: str | Path, passphrase: str) -> Vault:
        """Decrypt the vault at `path`; a wrong passphrase or any tampering raises VaultError."""
        path = Path(path)
        if not path.is_file():
            raise VaultError(f"no vault at {path} (create one with `keycam keys init`)")
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise VaultError(f"vault {path} is unreadable or corrupted: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise VaultError(f"{path} is not a keycam vault")
        if doc.get("version") not in READABLE_VERSIONS:
            raise VaultError(f"vault {path} has format version {doc.get('version')}; "
                             f"this keycam reads versions {', '.join(map(str, READABLE_VERSIONS))}")
        try:
            kdf = doc["kdf"]
            if not isinstance(kdf, dict) or kdf.get("name") != "scrypt" or doc.get("cipher") != "AES-256-GCM":
                raise VaultError(f"vault {path} uses an unsupported kdf/cipher")
            check_kdf(kdf, str(path))                 # absurd values get their own message first
            has_digest = doc["version"] >= 2 or "header_sha256" in doc   # a v2 file relabelled v1 too
            if has_digest and not hmac.compare_digest(str(doc.get("header_sha256", "")), header_digest(doc)):
                raise VaultError(f"vault {path}: the header (kdf parameters, salt or passphrase check) was "
                                 "tampered with or damaged; restore the vault from a backup")
            key = _derive(passphrase, kdf, str(path))
            check = hmac.new(key, _CHECK_LABEL, hashlib.sha256).digest()
            if not hmac.compare_digest(check, b64d(doc["check"], "check")):
                raise VaultError(f"wrong passphrase for vault {path}")
            plain = AESGCM(key).decrypt(b64d(doc["nonce"], "nonce"), b64d(doc["ciphertext"], "ciphertext"),
                                        _header_aad(doc))
        except InvalidTag as exc:
            raise VaultError(f"vault {path} has been tampered with or is corrupted "
                             "(authentication failed); restore it from a backup") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise VaultError(f"vault {path} is malformed: {exc}") from exc
        data = json.loads(plain)
        if not isinstance(data, dict):
            raise VaultError(f"vault {path} is malformed: its contents are not a JSON object")
        return cls(path, data, _read_devices(data.pop("devices", None), path), key, kdf)

    def on_save(self, write: Callable[[], Callable[[], None]]) -> None:
        """Queue a side write for the next save: `write()` runs just before the vault is written and
        returns an undo that save() calls if the vault cannot be written (the audit log uses this so
        it never records a change that was not committed)."""
        self._on_save.append(write)

    def save(self) -> None:
        """Run the queued side writes, then encrypt and atomically replace the vault file (mode 0600);
        if anything fails the side writes are undone and the old vault file stays as it was."""
        undo: list[Callable[[], None]] = []
        try:
            while self._on_save:
                undo.append(self._on_save.pop(0)())
            doc = {"format": FORMAT, "version": VERSION, "kdf": self._kdf, "cipher": "AES-256-GCM"}
            nonce = os.urandom(12)
            devices = {name: record.to_json() for name, record in self.devices.items()}
            plain = json.dumps({**self.data, "devices": devices}, sort_keys=True).encode()
            doc["check"] = b64e(hmac.new(self._key, _CHECK_LABEL, hashlib.sha256).digest())
            doc["header_sha256"] = header_digest(doc)
            doc["nonce"] = b64e(nonce)
            doc["ciphertext"] = b64e(AESGCM(self._key).encrypt(nonce, plain, _header_aad(doc)))
            atomic_write(self.path, json.dumps(doc, indent=1).encode())
        except BaseException:
            for step in reversed(undo):
                step()
            raise

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: str | Path, passphrase: str) -> Iterator[Vault]:
        """Open under an exclusive lock and save on normal exit (nothing is written on error: neither
        the vault nor the audit entries queued during the edit)."""
        path = Path(path)
        lock_path = path.with_name(f".{path.name}.lock")
        if not path.parent.is_dir():
            raise VaultError(f"no vault at {path} (create one with `keycam keys init`)")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            vault = cls.open(path, passphrase)
            yield vault
            vault.save()
        finally:
            os.close(fd)

    # ---- devices --------------------------------------------------------------------------------
    def device(self, device_id: str) -> DeviceRecord:
        """The record of one device; an unknown id raises VaultError listing the known ones."""
        if device_id not in self.devices:
            known = ", ".join(sorted(self.devices)) or "none"
            raise VaultError(f"device {device_id!r} is not in the vault (known: {known})")
        return self.devices[device_id]

    def require_new(self, device_id: str) -> None:
        """Refuse a device id that is already provisioned."""
        if device_id in self.devices:
            raise VaultError(f"device {device_id!r} is already provisioned; use `keycam keys rotate {device_id}`")

    def add_device(self, record: DeviceRecord) -> None:
        """Record a newly provisioned device; an id already in the vault is refused."""
        self.require_new(record.device_id)
        self.devices[record.device_id] = record

    # ---- signing key ----------------------------------------------------------------------------
    def signing_private(self) -> Ed25519PrivateKey:
        """The Ed25519 bundle-signing key (separate from every sensor/model key)."""
        return Ed25519PrivateKey.from_private_bytes(b64d(self.data["signing"]["private"], "signing.private"))
