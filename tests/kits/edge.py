"""Shared helpers for the device-runtime tests: a mosquitto broker, polling, a 10-class guard."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from edge.config import DeviceConfig, load_config
from edge.egress import EgressGuard, OutputPolicy
from edge.service import Service
from edge.sinks.base import Sink
from tests.kits.net import free_port

ROOT = Path(__file__).resolve().parents[2]
SIM_YAML = ROOT / "examples" / "sim-device.yaml"
SIM_DIR = ROOT / "examples" / "sim-device"

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


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


TOPIC = "keycam/test/records"


class Subscriber:
    """A durable (clean_session=False) QoS 1 subscriber collecting record sequence numbers."""

    def __init__(self, port: int):
        self.seqs: list[int] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="keycam-test-sub",
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.seqs.append(json.loads(message.payload)["seq"])

    def unique(self) -> set[int]:
        with self.lock:
            return set(self.seqs)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CollectSink(Sink):
    """Keeps every record it is sent (decoded)."""

    name = "collect"

    def __init__(self):
        super().__init__()
        self.records: list[dict] = []

    def _send(self, payload: bytes) -> None:
        self.records.append(json.loads(payload))
        self._count(sent=1)

    def of(self, kind: str) -> list[dict]:
        return [r for r in list(self.records) if r["type"] == kind]


class Running:
    """A Service running in a background thread (signals are the main thread's business).

    Every instance is remembered in `live` until stopped, so a test that fails before `stop()` does
    not leave a service logging into later tests (the `stop_leftover_services` fixture stops it)."""

    live: set[Running] = set()

    def __init__(self, config, max_frames=None):
        cfg = config if isinstance(config, DeviceConfig) else load_config(config)
        self.service = Service(cfg, max_frames=max_frames)
        self.summary: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        Running.live.add(self)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.service.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def where(self) -> str:
        """What the service is doing now, for a failure message: the gate, the metrics and the supervisor's
        (the service thread's) current stack."""
        frame = sys._current_frames().get(self.thread.ident)
        stack = "".join(traceback.format_stack(frame)[-8:]) if frame is not None else "(service thread ended)\n"
        pipe = self.service.pipeline
        gate = "open" if pipe is not None and pipe.gate_open else "closed"
        return f"gate {gate}, metrics {self.service.metrics.snapshot()}, service thread at:\n{stack}"

    def stop(self, timeout: float = 20) -> dict:
        self.service.request_stop()
        self.thread.join(timeout)
        Running.live.discard(self)
        assert not self.thread.is_alive(), "service did not stop"
        if self.error:
            raise self.error
        return self.summary
