"""The device service end to end on the simulated device: predictions, fail closed, hot swap, metrics."""
from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import urllib.request

import numpy as np
import pytest

from edge.config import load_config
from edge.runtime import TFLiteModel
from edge.service import Service
from hardware.camera.samples import load_samples
from keys.drbg import Drbg
from keys.generate import KeyConfig, sensor_key
from tests.kits.edge import SIM_DIR, Running, wait_until, write_config

_, LABELS = load_samples()


def _accuracy(predictions: list[dict]) -> float:
    hits = [r["top_k"][0]["label"] == _label_names()[LABELS[r["seq"] % len(LABELS)]] for r in predictions]
    return float(np.mean(hits))


def _label_names() -> tuple:
    from edge.labels import labels_for
    return labels_for("fashion")


def _meta(device) -> dict:
    return TFLiteModel(device / "model.tflite").metadata


@pytest.mark.timeout(60)
def test_simulated_device_predicts_through_the_keyed_model(tmp_path, device_dir, collect):
    run = Running(write_config(tmp_path, device_dir), max_frames=500)
    run.thread.join(50)
    summary = run.stop()
    preds = collect.of("prediction")
    assert summary["frames"] == 500 == len(preds) and summary["stop_reason"] == "frames done"
    assert [r["seq"] for r in preds] == list(range(500))        # replay order, nothing lost
    meta = _meta(device_dir)
    assert {(r["model_id"], r["key_fingerprint"]) for r in preds} == {(meta["model_id"], meta["key_fingerprint"])}
    assert _accuracy(preds) > 0.75
    assert summary["dropped"] == 0 and summary["alarms"] == 0
    assert all(summary["latency_ms"][s]["p50"] > 0 for s in ("capture", "key", "infer", "egress"))


@pytest.mark.timeout(60)
def test_fail_closed_on_a_mismatched_key_then_recovers(tmp_path, device_dir, collect):
    """A key that stops matching while running fails closed (at start-up it is an error: test_startup_checks)."""
    cfg = write_config(tmp_path, device_dir)
    good = (device_dir / "sensor.key").read_bytes()
    other = sensor_key(Drbg(bytes(32), "someone else"), (1, 28, 28), KeyConfig())
    run = Running(cfg)
    assert wait_until(lambda: len(collect.of("prediction")) >= 10, 15)
    (device_dir / "sensor.key").write_bytes(other.to_bytes())
    assert wait_until(lambda: sum(a["reason"] == "sensor_key_mismatch" for a in collect.of("alarm")) >= 4, 15)
    predicted = run.service.metrics.latency["infer"].count
    alarms = [a for a in collect.of("alarm") if a["reason"] == "sensor_key_mismatch"]
    assert {a["reason"] for a in collect.of("alarm")} <= {"sensor_key_mismatch", "model_swap_rejected"}
    assert [a["retry_in_s"] for a in alarms[:4]] == [0.1, 0.2, 0.4, 0.4]      # back-off, capped
    assert [a["attempt"] for a in alarms[:4]] == [1, 2, 3, 4]
    assert run.service.metrics.latency["infer"].count - predicted <= 8        # at most what was in flight

    (device_dir / "sensor.key").write_bytes(good)             # the right key comes back
    n = len(collect.of("prediction"))
    assert wait_until(lambda: len(collect.of("prediction")) >= n + 50, 15)
    assert wait_until(lambda: "key_stage_recovered" in {a["reason"] for a in collect.of("alarm")}, 5)
    summary = run.stop()
    assert summary["dropped_by_reason"]["fail_closed"] > 0
    assert _accuracy(collect.of("prediction")) > 0.75


@pytest.mark.timeout(60)
def test_missing_key_file_fails_closed(tmp_path, device_dir, collect):
    cfg = load_config(write_config(tmp_path, device_dir))
    (device_dir / "sensor.key").unlink()                      # gone after the config was validated
    run = Running(cfg)
    assert wait_until(lambda: len(collect.of("alarm")) >= 2, 15)
    run.stop()
    assert {a["reason"] for a in collect.of("alarm")} == {"sensor_key_missing"}
    assert not collect.of("prediction") and run.service.metrics.latency["infer"].count == 0


@pytest.mark.timeout(90)
def test_hot_swap_to_a_new_pair_without_restart(tmp_path, device_dir, other_device, collect):
    run = Running(write_config(tmp_path, device_dir))
    assert wait_until(lambda: len(collect.of("prediction")) >= 100, 20)
    staging = tmp_path / "staging"
    shutil.copytree(other_device, staging)
    os.replace(staging / "sensor.key", device_dir / "sensor.key")    # a deploy lands key, then model
    os.replace(staging / "model.tflite", device_dir / "model.tflite")
    new = _meta(device_dir)
    assert new["key_fingerprint"] != _meta(SIM_DIR)["key_fingerprint"]
    assert wait_until(lambda: any(r["key_fingerprint"] == new["key_fingerprint"]
                                  for r in collect.of("prediction")), 20)
    n = len(collect.of("prediction"))
    assert wait_until(lambda: len(collect.of("prediction")) >= n + 100, 20)
    summary = run.stop()
    preds = collect.of("prediction")
    pairs = [(r["model_id"], r["key_fingerprint"]) for r in preds]
    switch = pairs.index((new["model_id"], new["key_fingerprint"]))
    assert len(set(pairs[:switch])) == 1 and set(pairs[switch:]) == {(new["model_id"], new["key_fingerprint"])}
    assert _accuracy(preds[:switch]) > 0.75 and _accuracy(preds[switch:]) > 0.75   # no mismatched frame
    assert summary["model_swaps"] == 1 and "model_swapped" in {a["reason"] for a in collect.of("alarm")}


@pytest.mark.timeout(60)
def test_mismatched_new_pair_is_rejected_and_the_old_one_keeps_running(tmp_path, device_dir, other_device,
                                                                       collect):
    old = _meta(device_dir)
    run = Running(write_config(tmp_path, device_dir))
    assert wait_until(lambda: len(collect.of("prediction")) >= 20, 20)
    shutil.copy(other_device / "model.tflite", device_dir / "model.tflite.new")
    os.replace(device_dir / "model.tflite.new", device_dir / "model.tflite")   # model only, key unchanged
    assert wait_until(lambda: "model_swap_rejected" in {a["reason"] for a in collect.of("alarm")}, 20)
    n = len(collect.of("prediction"))
    assert wait_until(lambda: len(collect.of("prediction")) >= n + 50, 20)
    summary = run.stop()
    assert {r["key_fingerprint"] for r in collect.of("prediction")} == {old["key_fingerprint"]}
    assert summary["model_swaps"] == 0


@pytest.mark.timeout(60)
def test_metrics_endpoint_and_stats_records(tmp_path, device_dir, collect):
    cfg = write_config(tmp_path, device_dir, metrics={"enabled": True, "port": 0},
                       pipeline={"stats_interval_s": 0.2})
    run = Running(cfg)
    assert wait_until(lambda: run.service.metrics_server is not None and collect.of("stats"), 20)
    url = f"http://127.0.0.1:{run.service.metrics_server.port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    run.stop()
    meta = _meta(device_dir)
    assert f'model_id="{meta["model_id"]}"' in text and meta["key_fingerprint"] in text
    assert "keycam_key_stage_healthy 1" in text
    frames = [ln for ln in text.splitlines() if ln.startswith("keycam_frames_total ")]
    assert int(frames[0].split()[1]) > 0
    stats = collect.of("stats")[-1]
    assert stats["frames"] > 0 and set(stats["latency_ms"]) == {"capture", "key", "infer", "egress"}
    assert stats["sensor_fingerprint"] == meta["sensor_fingerprint"]


@pytest.mark.timeout(60)
def test_camera_failure_alarms_and_recovers(tmp_path, device_dir, collect):
    cfg = write_config(tmp_path, device_dir, camera={"faults": {"disconnect_after": 40}})
    run = Running(cfg)
    assert wait_until(lambda: len(collect.of("prediction")) >= 100, 20)
    run.stop()
    assert "camera_error" in {a["reason"] for a in collect.of("alarm")}


@pytest.mark.timeout(60)
def test_output_encryption_only_encrypted_logits_leave_and_the_key_holder_decodes(tmp_path, encrypted_device,
                                                                                 collect):
    from edge.egress import decode_encrypted_logits
    from keys.keyset import KeySet
    run = Running(write_config(tmp_path, encrypted_device), max_frames=300)
    run.thread.join(50)
    run.stop()
    preds = collect.of("prediction")
    assert len(preds) == 300 and all("top_k" not in r and len(r["encrypted_logits"]) == 10 for r in preds)
    keyset = KeySet.load(encrypted_device / "keyset.bin")
    names = _label_names()
    decoded = [decode_encrypted_logits(r["encrypted_logits"], keyset.output, names, top_k=1)[0][0] for r in preds]
    hits = [label == names[LABELS[r["seq"] % len(LABELS)]] for label, r in zip(decoded, preds)]
    assert np.mean(hits) > 0.75
    raw_top = [names[int(np.argmax(r["encrypted_logits"]))] for r in preds]   # without the key: not the answer
    assert np.mean([a == b for a, b in zip(raw_top, decoded)]) < 0.6


def test_startup_errors_are_clear_and_leave_nothing_running(tmp_path, device_dir):
    from base.errors import ModelError
    from hardware.camera import Picamera2Config
    from hardware.errors import CameraError
    no_camera = dataclasses.replace(load_config(write_config(tmp_path, device_dir)),
                                    camera=Picamera2Config(type="picamera2", size=[28, 28]))
    with pytest.raises(CameraError, match="picamera2"):      # no Raspberry Pi camera on this machine
        Service(no_camera, max_frames=1).run()
    bad_model = load_config(write_config(tmp_path, device_dir, model={"path": str(device_dir / "sensor.key")}))
    with pytest.raises(ModelError):
        Service(bad_model, max_frames=1).run()
    assert threading.active_count() < 10


@pytest.mark.timeout(60)
def test_sighup_style_reload_swaps_without_polling(tmp_path, device_dir, other_device, collect):
    run = Running(write_config(tmp_path, device_dir, model={"watch_interval_s": 0.0}))
    assert wait_until(lambda: len(collect.of("prediction")) >= 20, 20)
    for name in ("sensor.key", "model.tflite"):
        shutil.copy(other_device / name, device_dir / name)
    new_fp = _meta(device_dir)["key_fingerprint"]
    assert wait_until(lambda: len(collect.of("alarm")) >= 1, 10)          # old pair fails closed meanwhile
    run.service.request_reload()                                           # what SIGHUP does
    assert wait_until(lambda: any(r["key_fingerprint"] == new_fp for r in collect.of("prediction")), 20)
    assert run.stop()["model_swaps"] == 1


def test_the_service_imports_nothing_host_side(tmp_path, device_dir):
    import subprocess
    import sys
    cfg = write_config(tmp_path, device_dir)
    code = ("import sys; from edge.config import load_config; from edge.service import Service; "
            f"Service(load_config({str(cfg)!r}), max_frames=20).run(); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tools', 'torch', 'onnx')); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          cwd=SIM_DIR.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
