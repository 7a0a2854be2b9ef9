"""Software TPMs for tests: swtpm processes on 127.0.0.1 that tpm2-tools reach with a swtpm TCTI."""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 5.0


def two_free_ports() -> int:
    """A port P with P+1 also free (swtpm's command and control channels)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


class SoftTpm:
    """One swtpm process with its own state folder (its own seeds: another TPM); restartable."""

    def __init__(self, state: Path):
        self.state = state
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = two_free_ports()
        self.proc: subprocess.Popen | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state}",
             "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
             "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"swtpm exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"swtpm did not listen on port {self.port} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.proc.stderr.close()
        self.proc = None


@contextlib.contextmanager
def soft_tpms(folder: Path) -> Iterator[Callable[[], SoftTpm]]:
    """Start software TPMs on demand, each with its own state (fresh seeds) under `folder`; all are
    stopped on exit. swtpm or tpm2-tools missing fails the test: CI installs them."""
    for tool in ("swtpm", "tpm2_createprimary"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install swtpm tpm2-tools; scripts/bootstrap.sh "
                        "test does)")
    started: list[SoftTpm] = []

    def start() -> SoftTpm:
        tpm = SoftTpm(folder / f"tpm{len(started)}")
        started.append(tpm)
        tpm.start()
        return tpm

    try:
        yield start
    finally:
        for tpm in started:
            tpm.stop()
