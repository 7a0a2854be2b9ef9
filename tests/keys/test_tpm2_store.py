"""The TPM2 device-key store against real software TPMs (swtpm on 127.0.0.1, driven by tpm2-tools)."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from base.errors import ConfigError
from keys import tpm2_store
from keys.keystore import KEY_FILE, STORE_FILE, FileKeyStore, open_store
from keys.tpm2_store import SEALED_FILE, TOOLS_MISSING, Tpm2KeyStore, TpmError, tpm_problem
from tests.kits.swtpm import soft_tpms, two_free_ports


@pytest.fixture
def soft_tpm(tmp_path):
    with soft_tpms(tmp_path) as start:
        yield start


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The temp folder the store's scratch folders go to (checked empty after each use)."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _key() -> bytes:
    return os.urandom(32)


def _all_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_round_trip_survives_a_restart_and_leaves_no_clear_copy(soft_tpm, scratch, tmp_path):
    tpm = soft_tpm()
    identity = tmp_path / "identity"
    old, key = _key(), _key()
    FileKeyStore.create(identity, old)          # a device moving from the file store to the TPM
    store = Tpm2KeyStore.create(identity, key, tcti=tpm.tcti)
    assert store.private_bytes() == key
    meta = json.loads((identity / STORE_FILE).read_text())
    assert meta == {"store": "tpm2", "tcti": tpm.tcti, "hierarchy": "o", "primary": "ecc256:aes128cfb",
                    "hash": "sha256"}
    assert not (identity / KEY_FILE).exists()
    assert (os.stat(identity / SEALED_FILE).st_mode & 0o777) == 0o600

    reopened = open_store(identity)             # a fresh object, as the agent makes after a boot
    assert isinstance(reopened, Tpm2KeyStore) and reopened.private_bytes() == key
    assert reopened.private_key().private_bytes_raw() == key
    forms = [form for k in (key, old) for form in (k, k.hex().encode(), base64.b64encode(k))]
    for path, data in _all_bytes(identity):
        assert not any(form in data for form in forms), f"{path} holds the key in clear"
    assert list(scratch.iterdir()) == []        # scratch folders are gone

    tpm.stop()                                  # a reboot: the TPM recreates the same primary
    tpm.start()
    assert open_store(identity).private_bytes() == key


def test_another_tpm_cannot_open_it(soft_tpm, tmp_path):
    identity = tmp_path / "identity"
    Tpm2KeyStore.create(identity, _key(), tcti=soft_tpm().tcti)
    other = soft_tpm()
    meta = json.loads((identity / STORE_FILE).read_text())
    (identity / STORE_FILE).write_text(json.dumps({**meta, "tcti": other.tcti}))   # the card in another Pi
    with pytest.raises(TpmError) as exc:
        open_store(identity).private_bytes()
    msg = _one_line(exc)
    assert "sealed by another TPM" in msg and "integrity check failed" in msg


def test_tpm_not_running_is_one_clear_line(soft_tpm, tmp_path):
    tpm = soft_tpm()
    identity = tmp_path / "identity"
    key = _key()
    Tpm2KeyStore.create(identity, key, tcti=tpm.tcti)
    tpm.stop()
    with pytest.raises(TpmError) as exc:
        open_store(identity).private_bytes()
    msg = _one_line(exc)
    assert f"the TPM at {tpm.tcti} is not answering" in msg and "Connection refused" in msg
    assert "--store file" in msg
    assert tpm_problem(tpm.tcti) == msg

    # sealing into a TPM that does not answer changes nothing on disk
    fresh = tmp_path / "fresh"
    FileKeyStore.create(fresh, key)
    before = _all_bytes(fresh)
    with pytest.raises(TpmError, match="is not answering"):
        Tpm2KeyStore.create(fresh, _key(), tcti=tpm.tcti)
    assert _all_bytes(fresh) == before


def test_an_owner_password_or_a_hung_tpm_is_one_clear_line(soft_tpm, tmp_path, monkeypatch):
    tpm = soft_tpm()
    subprocess.run(["tpm2_changeauth", "-T", tpm.tcti, "-c", "owner", "not-empty"], check=True,
                   capture_output=True)
    with pytest.raises(TpmError) as exc:
        Tpm2KeyStore.create(tmp_path / "identity", _key(), tcti=tpm.tcti)
    assert "needs the empty owner password" in _one_line(exc) and "authorization failure" in str(exc.value)
    assert not (tmp_path / "identity").exists()

    monkeypatch.setattr(tpm2_store, "TOOL_TIMEOUT_S", 1.0)
    port = two_free_ports()
    with socket.socket() as cmd, socket.socket() as ctrl:   # a TPM that takes connections, never answers
        for sock, p in ((cmd, port), (ctrl, port + 1)):
            sock.bind(("127.0.0.1", p))
            sock.listen()
        assert tpm_problem(f"swtpm:host=127.0.0.1,port={port}") == (
            f"cannot reach the TPM: the TPM at swtpm:host=127.0.0.1,port={port} did not answer within 1 s")


def test_a_device_without_a_tpm_says_what_is_missing(tmp_path, monkeypatch):
    missing = tmp_path / "tpmrm0"
    problem = tpm_problem(f"device:{missing}")
    assert problem.startswith(f"no TPM 2.0 at device:{missing} (fit a TPM HAT")
    assert "dtoverlay=tpm-slb9670" in problem and "--store file" in problem
    with pytest.raises(TpmError) as exc:
        Tpm2KeyStore.create(tmp_path / "identity", _key(), tcti=f"device:{missing}")
    assert _one_line(exc) == problem and not (tmp_path / "identity").exists()
    monkeypatch.delenv("TPM2TOOLS_TCTI", raising=False)
    monkeypatch.setenv("TCTI", f"device:{missing}")          # the default TCTI follows the environment
    assert tpm_problem() == problem
    monkeypatch.setenv("PATH", str(tmp_path))                # no tpm2-tools installed
    assert tpm_problem(f"device:{missing}") == TOOLS_MISSING
    identity = tmp_path / "card"                             # a sealed card in a Pi without the tools
    identity.mkdir()
    (identity / SEALED_FILE).write_bytes(b"\x00\x01p\x00\x01s")
    (identity / STORE_FILE).write_text(json.dumps({"store": "tpm2", "tcti": "device:/dev/tpmrm0"}))
    with pytest.raises(TpmError) as exc:
        open_store(identity).private_bytes()
    assert _one_line(exc) == TOOLS_MISSING
    assert "apt install tpm2-tools" in TOOLS_MISSING


@pytest.mark.parametrize("text, error", [
    ("{not json", "is corrupted"),
    ('{"store": "tpm2"}', "is corrupted"),
    ('{"store": "tpm2", "tcti": "swtpm:port=1", "seal": "x"}', "is corrupted"),
    ('{"store": "tpm2", "tcti": 7}', "is corrupted"),
    ('{"store": "tpm2", "tcti": "cmd:touch {marker}"}', "unsupported TPM TCTI"),
    ('{"store": "tpm2", "tcti": "swtpm:port=1", "primary": "rsa2048"}', "cannot recreate"),
])
def test_a_corrupted_keystore_json_is_one_clear_line(tmp_path, text, error):
    identity = tmp_path / "identity"
    identity.mkdir()
    marker = tmp_path / "ran"
    (identity / STORE_FILE).write_text(text.replace("{marker}", str(marker)))
    with pytest.raises(ConfigError) as exc:
        open_store(identity).private_bytes()
    assert error in _one_line(exc) and str(identity / STORE_FILE) in str(exc.value)
    assert not marker.exists()


def test_a_damaged_sealed_key_is_one_clear_line(soft_tpm, tmp_path):
    identity = tmp_path / "identity"
    Tpm2KeyStore.create(identity, _key(), tcti=soft_tpm().tcti)
    sealed = identity / SEALED_FILE
    blob = sealed.read_bytes()
    flipped = bytearray(blob)
    flipped[-5] ^= 0x40                                      # inside the encrypted private area
    sealed.write_bytes(bytes(flipped))
    with pytest.raises(TpmError, match="cannot load the sealed device key") as exc:
        open_store(identity).private_bytes()
    _one_line(exc)
    sealed.write_bytes(blob[:-1])
    with pytest.raises(TpmError, match="is damaged"):
        open_store(identity).private_bytes()
    sealed.unlink()
    with pytest.raises(TpmError, match="is missing"):
        open_store(identity).private_bytes()


def test_only_a_32_byte_key_is_sealed(tmp_path):
    with pytest.raises(TpmError, match="32 bytes, got 31"):
        Tpm2KeyStore.create(tmp_path, os.urandom(31), tcti="swtpm:host=127.0.0.1,port=1")
