"""The device key sealed to the device's TPM 2.0 (on a Pi: a TPM HAT), driven through tpm2-tools.

At rest the identity folder holds only what the TPM can open:
    identity/device.tpm2     the sealed data object (keyedhash) holding the 32-byte X25519 key: its public
                             and private areas (TPM2B_PUBLIC then TPM2B_PRIVATE, as tpm2_create writes them,
                             one file so that one atomic write replaces both); the private area is
                             encrypted under a storage key that never leaves this TPM, so another TPM (or
                             this one after `tpm2_clear`) cannot load it
    identity/keystore.json   {"store": "tpm2", "tcti", "hierarchy", "primary", "hash"}
The parent is a primary storage key in the owner hierarchy made from a fixed template, so the TPM derives
the same key from its seed after every reboot: no persistent handle to allocate or leak. Each use
recreates the primary, loads the sealed object and unseals it into memory.

The clear key travels only through pipes: into `tpm2_create` on stdin, out of `tpm2_unseal` on stdout.
The scratch folder holds TPM context blobs (sealed by the TPM itself) and is removed after every use.

Why tpm2-tools and not tpm2-pytss: tpm2-tools is one Debian / Raspberry Pi OS package (`apt install
tpm2-tools`, arm64 included) that pulls every TCTI (device, swtpm, mssim, tabrmd). tpm2-pytss has no
wheels on PyPI (checked: `pip download --no-deps tpm2-pytss` gets an sdist whose build needs libtss2-dev,
pkg-config and a compiler), so a venv on a fresh Pi or CI runner would have to compile it.

No PCR policy: the Pi's boot firmware measures nothing into the PCRs, so a PCR policy would bind the key
to nothing that an attacker with the card and the TPM cannot reproduce. The seal protects against a
stolen SD card (or a copied identity folder), not against root on the running device.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from base.atomic import atomic_write
from base.errors import ConfigError, KeycamError
from keys.keystore import KEY_FILE, STORE_FILE, DeviceKeyStore

SEALED_FILE = "device.tpm2"
SEAL_PUB = "seal.pub"      # names in the scratch folder only
SEAL_PRIV = "seal.priv"
DEFAULT_TCTI = "device:/dev/tpmrm0"
KEY_BYTES = 32
TOOL_TIMEOUT_S = 30.0
# the owner-hierarchy storage primary: ECC P-256 is fast on every TPM 2.0 chip (an RSA primary takes
# seconds to create on an SLB9670); the template is fixed, so the TPM derives the same key every time
HIERARCHY = "o"
PRIMARY = "ecc256:aes128cfb"
NAME_HASH = "sha256"
# TCTIs that talk to a TPM; "cmd" (runs a program) is refused so keystore.json cannot start one
TCTI_NAMES = ("device", "swtpm", "mssim", "tabrmd")
NO_STORE = "or export with --store file"
TOOLS_MISSING = f"tpm2-tools is not installed (sudo apt install tpm2-tools, {NO_STORE})"


class TpmError(KeycamError):
    """The TPM is missing, unreachable or refused an operation."""


def default_tcti() -> str:
    """The TCTI to use: $TPM2TOOLS_TCTI, else $TCTI, else the kernel's resource manager device."""
    return os.environ.get("TPM2TOOLS_TCTI") or os.environ.get("TCTI") or DEFAULT_TCTI


def _check_tcti(tcti: str, source: str = "") -> str:
    """`tcti` if it names a TPM transport (`source`, e.g. "PATH: ", starts the error line)."""
    name = tcti.split(":", 1)[0]
    if name not in TCTI_NAMES:
        raise ConfigError(f"{source}unsupported TPM TCTI {tcti!r}; use one of: "
                          + ", ".join(f"{n}:..." for n in TCTI_NAMES))
    return tcti


def _device_path(tcti: str) -> str | None:
    """The character device a `device` TCTI opens (None for other TCTIs)."""
    name, _, conf = tcti.partition(":")
    return (conf or "/dev/tpmrm0") if name == "device" else None


def _resource_managed(tcti: str) -> bool:
    """Whether something between us and the TPM flushes our transient objects when a tool exits."""
    path = _device_path(tcti)
    return tcti.startswith("tabrmd") or (path is not None and "tpmrm" in path)


_LOG_PREFIX = re.compile(r"^(WARNING|ERROR)(:[\w-]+:\S+\(\))?:?\s*")


def _reason(stderr: bytes) -> str:
    """The most telling line of a tpm2-tools failure (the TPM's response code or the OS error)."""
    lines = [_LOG_PREFIX.sub("", ln).strip() for ln in stderr.decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    for ln in lines:
        if "errno" in ln or "tpm:" in ln or "No such file" in ln or "Permission denied" in ln:
            return ln
    return lines[-1] if lines else "no error message"


def tpm_problem(tcti: str | None = None) -> str | None:
    """Why no TPM 2.0 can be used at `tcti` (default: default_tcti()), as one actionable line; None if
    one answers. The export command calls this before sealing."""
    tcti = _check_tcti(tcti or default_tcti())
    if shutil.which("tpm2_createprimary") is None:
        return TOOLS_MISSING
    path = _device_path(tcti)
    if path is not None:
        if not os.path.exists(path):
            return (f"no TPM 2.0 at {tcti} (fit a TPM HAT and add dtparam=spi=on and "
                    f"dtoverlay=tpm-slb9670 to /boot/firmware/config.txt, then reboot; {NO_STORE})")
        if not os.access(path, os.R_OK | os.W_OK):
            return (f"no permission to use the TPM at {path} (run as root or add the user to the tss "
                    f"group: sudo usermod -aG tss $USER; {NO_STORE})")
    try:
        proc = _tool(tcti, "tpm2_getcap", "properties-fixed", doing="reach the TPM")
    except TpmError as exc:
        return str(exc)
    if proc.returncode != 0:
        return f"the TPM at {tcti} is not answering: {_reason(proc.stderr)} ({NO_STORE})"
    return None


def _tool(tcti: str, tool: str, *args: str, stdin: bytes | None = None, cwd: Path | None = None,
          doing: str) -> subprocess.CompletedProcess:
    """Run one tpm2-tools program against `tcti`; a missing program or a TPM that hangs is a TpmError."""
    try:
        return subprocess.run([tool, "-T", tcti, *args], input=stdin, capture_output=True, cwd=cwd,
                              timeout=TOOL_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise TpmError(TOOLS_MISSING) from exc
    except subprocess.TimeoutExpired as exc:
        raise TpmError(f"cannot {doing}: the TPM at {tcti} did not answer within "
                       f"{TOOL_TIMEOUT_S:.0f} s") from exc


class _Tpm:
    """tpm2-tools against one TCTI, with a private scratch folder for the TPM's context blobs."""

    def __init__(self, tcti: str, scratch: Path):
        self.tcti = tcti
        self.scratch = scratch
        self.flush = not _resource_managed(tcti)

    def run(self, tool: str, *args: str, stdin: bytes | None = None, doing: str) -> bytes:
        """Run `tool` and return its stdout; a failure is one TpmError line saying what was being done."""
        proc = _tool(self.tcti, tool, *args, stdin=stdin, cwd=self.scratch, doing=doing)
        if self.flush:   # a bare TPM (swtpm, /dev/tpm0) keeps transient objects after the tool exits
            _tool(self.tcti, "tpm2_flushcontext", "-t", doing="flush the TPM's transient objects")
        if proc.returncode != 0:
            if b"Could not load tcti" in proc.stderr:
                raise TpmError(tpm_problem(self.tcti) or f"cannot reach the TPM at {self.tcti}: "
                               f"{_reason(proc.stderr)} ({NO_STORE})")
            raise TpmError(f"cannot {doing}: {_reason(proc.stderr)}")
        return proc.stdout

    def primary(self) -> str:
        """Recreate the storage primary key; return its context file (in the scratch folder)."""
        self.run("tpm2_createprimary", "-C", HIERARCHY, "-g", NAME_HASH, "-G", PRIMARY, "-c", "primary.ctx",
                 doing=f"create the TPM's storage primary key in the owner hierarchy (it needs the empty "
                       f"owner password; {NO_STORE})")
        return "primary.ctx"


@dataclass(frozen=True)
class Tpm2Params:
    """What keystore.json records to reopen a sealed key."""
    tcti: str
    hierarchy: str = HIERARCHY
    primary: str = PRIMARY
    hash: str = NAME_HASH

    @classmethod
    def from_meta(cls, meta: dict, path: Path) -> Tpm2Params:
        try:
            params = cls(**{k: v for k, v in meta.items() if k != "store"})
        except TypeError as exc:
            raise ConfigError(f"{path} is corrupted: {exc}") from exc
        if not isinstance(params.tcti, str):
            raise ConfigError(f"{path} is corrupted: tcti is not a string")
        _check_tcti(params.tcti, f"{path}: ")
        if (params.hierarchy, params.primary, params.hash) != (HIERARCHY, PRIMARY, NAME_HASH):
            raise ConfigError(f"{path} names a TPM primary key this keycam cannot recreate "
                              f"({params.hierarchy}/{params.primary}/{params.hash}; it knows "
                              f"{HIERARCHY}/{PRIMARY}/{NAME_HASH})")
        return params


class Tpm2KeyStore(DeviceKeyStore):
    """The device key sealed to this device's TPM 2.0."""
    name = "tpm2"

    def __init__(self, identity_dir: Path, params: Tpm2Params):
        super().__init__(identity_dir)
        self.params = params

    @property
    def sealed_path(self) -> Path:
        return self.identity_dir / SEALED_FILE

    def metadata(self) -> dict:
        return {**super().metadata(), **asdict(self.params)}

    @classmethod
    def create(cls, identity_dir: Path, raw_private: bytes, tcti: str | None = None) -> Tpm2KeyStore:
        """Seal `raw_private` to the TPM at `tcti` (default: default_tcti()) and check that it unseals to
        the same bytes; only then write identity/device.tpm2, record the store, and remove a clear
        identity/device.key left by the file store."""
        if len(raw_private) != KEY_BYTES:
            raise TpmError(f"a device private key is {KEY_BYTES} bytes, got {len(raw_private)}")
        store = cls(identity_dir, Tpm2Params(_check_tcti(tcti or default_tcti())))
        problem = tpm_problem(store.params.tcti)
        if problem:
            raise TpmError(problem)
        with tempfile.TemporaryDirectory(prefix="keycam-tpm2-") as scratch:
            tpm = _Tpm(store.params.tcti, Path(scratch))
            tpm.run("tpm2_create", "-C", tpm.primary(), "-g", NAME_HASH, "-i", "-", "-u", SEAL_PUB,
                    "-r", SEAL_PRIV, stdin=raw_private, doing="seal the device key in the TPM")
            if store._unseal(tpm) != raw_private:
                raise TpmError(f"the TPM at {store.params.tcti} unsealed another key than it sealed; "
                               f"nothing was changed ({NO_STORE})")
            sealed = b"".join((Path(scratch) / name).read_bytes() for name in (SEAL_PUB, SEAL_PRIV))
        store.identity_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(store.sealed_path, sealed, 0o600)
        store._record()
        (store.identity_dir / KEY_FILE).unlink(missing_ok=True)
        return store

    @classmethod
    def problem(cls, tcti: str | None = None) -> str | None:
        return tpm_problem(tcti)

    @classmethod
    def open(cls, identity_dir: Path, meta: dict) -> Tpm2KeyStore:
        return cls(identity_dir, Tpm2Params.from_meta(meta, Path(identity_dir) / STORE_FILE))

    def private_bytes(self) -> bytes:
        """Recreate the primary, load the sealed object and unseal it into memory."""
        public, private = _split_sealed(self.sealed_path)
        with tempfile.TemporaryDirectory(prefix="keycam-tpm2-") as scratch:
            (Path(scratch) / SEAL_PUB).write_bytes(public)
            (Path(scratch) / SEAL_PRIV).write_bytes(private)
            return self._unseal(_Tpm(self.params.tcti, Path(scratch)))

    def _unseal(self, tpm: _Tpm) -> bytes:
        """Unseal the object whose areas are SEAL_PUB and SEAL_PRIV in `tpm`'s scratch folder."""
        tpm.run("tpm2_load", "-C", tpm.primary(), "-u", SEAL_PUB, "-r", SEAL_PRIV, "-c", "seal.ctx",
                doing=f"load the sealed device key {self.sealed_path} (it was sealed by another TPM, "
                      f"or the TPM was cleared; export the device again)")
        return tpm.run("tpm2_unseal", "-c", "seal.ctx", doing="unseal the device key")


def _split_sealed(path: Path) -> tuple[bytes, bytes]:
    """The sealed object's TPM2B_PUBLIC and TPM2B_PRIVATE, each a 2-byte big-endian size and its bytes."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise TpmError(f"the TPM-sealed device key {path} is missing; export the device again") from exc
    parts, rest = [], blob
    for _ in range(2):
        size = int.from_bytes(rest[:2], "big") + 2
        if len(rest) < size or size == 2:
            break
        parts.append(rest[:size])
        rest = rest[size:]
    if len(parts) != 2 or rest:
        raise TpmError(f"the TPM-sealed device key {path} is damaged ({len(blob)} bytes are not a public "
                        f"and a private area); export the device again")
    return parts[0], parts[1]
