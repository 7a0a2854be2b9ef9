"""Shared helpers for the device-runtime tests: a mosquitto broker, polling, a 10-class guard."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

from edge.egress import EgressGuard, OutputPolicy

ROOT = Path(__file__).resolve().parents[2]
SIM_YAML = ROOT / "examples" / "sim-device.yaml"
SIM_DIR = ROOT / "examples" / "sim-device"

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Broker:
    """A mosquitto process with persistence in a temp folder, which tests stop and restart."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.conf = folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {folder}/", "autosave_interval 1",
                 f"log_dest file {folder}/mosquitto.log"]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_until(self._accepting, 10):
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {(self.folder / 'mosquitto.log').read_text()}")

    def _accepting(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


LABELS = tuple(f"class{i}" for i in range(10))
FP_KEY = "a" * 64
FP_SENSOR = "b" * 64


def policy(output_encrypted: bool = False, top_k: int = 3, **kw) -> OutputPolicy:
    return OutputPolicy(model_id="demo-model", key_fingerprint=FP_KEY, sensor_fingerprint=FP_SENSOR,
                        labels=LABELS, n_outputs=10, output_encrypted=output_encrypted, top_k=top_k, **kw)


def guard(**kw) -> EgressGuard:
    return EgressGuard(policy(**kw))


def top_k_record(seq: int, **overrides) -> dict:
    record = {"type": "prediction", "timestamp": time.time(), "seq": seq, "model_id": "demo-model",
              "key_fingerprint": FP_KEY,
              "top_k": [{"label": "class3", "score": 0.9}, {"label": "class1", "score": 0.05}]}
    record.update(overrides)
    return record


def write_config(folder: Path, device: Path, **sections) -> Path:
    """Write a device YAML based on examples/sim-device.yaml: fast replay, no metrics, discard sink.

    Each keyword replaces (dict: updates) one top-level section.
    """
    cfg = yaml.safe_load(SIM_YAML.read_text())
    cfg["camera"].update(fps=None)
    cfg["key_stage"].update(sensor_key=str(device / "sensor.key"), health_interval_s=0.2,
                            retry_initial_s=0.1, retry_max_s=0.4)
    cfg["model"].update(path=str(device / "model.tflite"), watch_interval_s=0.1)
    cfg["pipeline"].update(drop_when_full=False, stats_interval_s=0.0)
    cfg["metrics"] = {"enabled": False, "port": 0}
    cfg["sinks"] = [{"type": "discard"}]
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(name), dict):
            cfg[name].update(value)
        else:
            cfg[name] = value
    path = folder / "device.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
