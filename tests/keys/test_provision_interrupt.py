"""Issue 16 defect 7: `keys provision` interrupted (SIGINT) once its vault change is committed reports
success consistently: exit 0 with the "provisioned" line, and the vault holds the device."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from keys.vault import Vault

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "tools" / "models" / "lenet_mnist.onnx"
PASS = "provision-interrupt-pass"
KEYCAM = [sys.executable, "-c", "from keycam.cli import main; main()"]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("when", ["after the line", "at the commit"])
def test_sigint_after_the_commit_still_reports_the_provision(tmp_path, when):
    env = {**os.environ, "PYTHONPATH": str(REPO), "KEYCAM_VAULT": str(tmp_path / "v.kcv"),
           "KEYCAM_VAULT_PASSPHRASE": PASS}
    subprocess.run(KEYCAM + ["keys", "init"], env=env, cwd=REPO, check=True, capture_output=True, timeout=60)
    if when == "at the commit":
        env["KEYCAM_PROVISION_INTERRUPT_AT"] = "committed"     # SIGINT right after the vault save
    proc = subprocess.Popen(KEYCAM + ["keys", "provision", "cam-1", "--model", str(MODEL), "--profile", "stem",
                                      "--no-faceplate"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if when == "after the line":
        proc.send_signal(signal.SIGINT)                       # Ctrl-C just after "provisioned"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert line.startswith("provisioned cam-1: key set "), (line, out, err)
    assert "Traceback" not in err and "Aborted" not in err
    assert "cam-1" in Vault.open(env["KEYCAM_VAULT"], PASS).devices
