"""Issue 16 defect 2: every write path on a full disk gives one clear line, leaves no partial file and
writes no audit entry for a change that was not committed. Uses a real 2 MB tmpfs (needs root)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from keycam.cli import cli

REPO = Path(__file__).resolve().parents[2]
FASHION = REPO / "tools" / "models" / "lenet_fashion.onnx"
MODEL = FASHION if FASHION.exists() else REPO / "tools" / "models" / "lenet_mnist.onnx"
PASS = "disk-full-test-pass"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory):
    """A 2 MB tmpfs holding a vault with cam-1 provisioned (about 740 kB: a second one does not fit)."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full tests mount a 2 MB tmpfs, which needs root (CI runs as root)")
    mnt = tmp_path_factory.mktemp("tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, f"mount -t tmpfs failed although running as root: {proc.stderr}"
    try:
        vault = mnt / "vault.kcv"
        for args in (["init"], ["provision", "cam-1", "--model", str(MODEL), "--profile", "stem",
                                "--no-faceplate"]):
            res = keycam("keys", *args, vault=vault)
            assert res.exit_code == 0, res.output
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


def keycam(*args: str, vault: Path):
    return CliRunner().invoke(cli, list(args), env={"KEYCAM_VAULT": str(vault), "KEYCAM_VAULT_PASSPHRASE": PASS})


def assert_one_clear_line(res, *words: str) -> None:
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)  # no traceback
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "disk full" in last, res.output
    for word in words:
        assert word in last, last


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.suffix == ".part")


def fill(mnt: Path, leave: int = 32 * 1024) -> Path:
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_second_provision_on_a_full_disk_is_one_line_and_leaves_no_audit_entry(tmpfs):
    vault = tmpfs / "vault.kcv"
    log = tmpfs / "vault.kcv.audit.jsonl"
    before = (vault.read_bytes(), log.read_bytes())
    for _ in range(2):                                   # a retry must not add an entry either
        res = keycam("keys", "provision", "cam-2", "--model", str(MODEL), "--profile", "stem",
                     "--no-faceplate", vault=vault)
        assert_one_clear_line(res, str(vault))
    assert (vault.read_bytes(), log.read_bytes()) == before
    assert leftovers(tmpfs) == []
    audit = keycam("keys", "audit", vault=vault)
    assert audit.exit_code == 0 and "cam-2" not in audit.output, audit.output
    listing = keycam("keys", "list", vault=vault)
    assert "cam-1" in listing.output and "cam-2" not in listing.output


def test_export_to_a_full_disk_is_one_line_and_leaves_no_partial_file(tmpfs):
    filler = fill(tmpfs)
    try:
        out = tmpfs / "sd"
        res = keycam("keys", "export", "cam-1", "--out", str(out), vault=tmpfs / "vault.kcv")
        assert_one_clear_line(res, str(out))
        assert leftovers(tmpfs) == []
    finally:
        filler.unlink()


def test_deploy_build_to_a_full_disk_is_one_line_and_leaves_no_temp_bundle(tmpfs):
    filler = fill(tmpfs, leave=64 * 1024)
    try:
        log = tmpfs / "vault.kcv.audit.jsonl"
        before = log.read_bytes()
        res = keycam("deploy", "build", "cam-1", "--version", "1.0.0", "--out", str(tmpfs),
                     "--canary-frames", "4", vault=tmpfs / "vault.kcv")
        assert_one_clear_line(res, "cam-1-1.0.0.bundle")
        assert leftovers(tmpfs) == [] and not (tmpfs / "cam-1-1.0.0.bundle").exists()
        assert log.read_bytes() == before
    finally:
        filler.unlink()
