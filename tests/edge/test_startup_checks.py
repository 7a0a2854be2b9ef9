"""Issue 16 defect 6: a run that can never succeed ends at start-up with one clear error; transient
key-stage faults keep the fail-closed retry without alternating error/recovered alarms."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from base.errors import ConfigError
from edge.keystage import SimulatedKeyStage
from hardware.errors import KeyStageError
from keys.drbg import Drbg
from keys.generate import KeyConfig, sensor_key
from tests.kits.edge import ROOT, Running, wait_until, write_config


def _run(cfg, *extra):
    return subprocess.run([sys.executable, "-c", "from keycam.cli import main; main()", "run", "--config", str(cfg),
                           "--frames", "50", *extra], capture_output=True, text=True, timeout=90, cwd=ROOT)


def _assert_one_line(proc, *words):
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in last, last


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_frames_of_another_size_than_the_model_end_at_startup(tmp_path, device_dir):
    frames = tmp_path / "frames32"
    frames.mkdir()
    for i in range(3):
        np.save(frames / f"{i}.npy", np.full((32, 32), 0.5, dtype=np.float32))
    proc = _run(write_config(tmp_path, device_dir, camera={"source": str(frames)}))
    _assert_one_line(proc, "(32, 32)", "1024 values", "784 values")
    assert "key_stage_error" not in proc.stderr and "key_stage_recovered" not in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", ["corrupt", "foreign"])
def test_a_corrupt_or_foreign_sensor_key_ends_at_startup(tmp_path, device_dir, key):
    if key == "corrupt":
        (device_dir / "sensor.key").write_bytes(b"not a key file at all" * 10)
    else:
        other = sensor_key(Drbg(bytes(32), "someone else"), (1, 28, 28), KeyConfig())
        (device_dir / "sensor.key").write_bytes(other.to_bytes())
    proc = _run(write_config(tmp_path, device_dir))
    _assert_one_line(proc, "key_stage.sensor_key")


def test_run_check_reports_the_same_startup_error(tmp_path, device_dir):
    other = sensor_key(Drbg(bytes(32), "someone else"), (1, 28, 28), KeyConfig())
    (device_dir / "sensor.key").write_bytes(other.to_bytes())
    from edge.config_cli import check_device
    with pytest.raises(ConfigError, match="key_stage.sensor_key"):
        check_device(write_config(tmp_path, device_dir))


@pytest.mark.timeout(60)
def test_transient_key_stage_faults_back_off_without_flapping_alarms(tmp_path, device_dir, collect, monkeypatch):
    broken = threading.Event()
    broken.set()
    real = SimulatedKeyStage.__call__

    def flaky(self, image):
        if broken.is_set():
            raise KeyStageError("injected transient fault")
        return real(self, image)
    monkeypatch.setattr(SimulatedKeyStage, "__call__", flaky)
    run = Running(write_config(tmp_path, device_dir))
    assert wait_until(lambda: sum(a["reason"] == "key_stage_error" for a in collect.of("alarm")) >= 3, 15)
    reasons = [a["reason"] for a in collect.of("alarm")]
    assert "key_stage_recovered" not in reasons                       # no error/recovered alternation
    errors = [a for a in collect.of("alarm") if a["reason"] == "key_stage_error"]
    assert [a["retry_in_s"] for a in errors[:3]] == [0.1, 0.2, 0.4]
    broken.clear()                                                    # the fault goes away
    assert wait_until(lambda: len(collect.of("prediction")) >= 20, 15)
    assert wait_until(lambda: "key_stage_recovered" in [a["reason"] for a in collect.of("alarm")], 5)
    run.stop()
    reasons = [a["reason"] for a in collect.of("alarm")]
    assert reasons.count("key_stage_recovered") == 1 and reasons[-1] == "key_stage_recovered"
