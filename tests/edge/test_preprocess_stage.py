"""The optional preprocess stage (e.g. the SAN): a keyed TFLite model run on every keyed frame before the
model. A small generated stage re-keys frames from a device permutation key A to the shipped model's sensor
key S (GATHER, MUL, ADD), so the device with the stage must predict what the device without it predicts."""
from __future__ import annotations

import numpy as np
import pytest

from base.errors import ConfigError, ModelError
from edge.config import load_config
from edge.keystage import load_sensor_key
from edge.service import Service
from keys.factors import Key, Permutation
from tests.kits.edge import Running, write_config

N = 28 * 28


def _stage_bytes(a: Key, s: Key, meta: dict | None = None, size: int = N) -> bytes:
    """float32 stage: out = S(A^-1(frame)), for a permutation A and a sensor key S without mixing."""
    from ai_edge_litert import schema_py_generated as fb

    from tools.tflite.builder import GraphBuilder

    lin = s.linear_csr().tocsr()
    assert np.all(np.diff(lin.indptr) == 1), "the stage needs one input per output (no tile mixing)"
    inv_a = np.argsort(a.factors[0].perm)
    g = GraphBuilder()
    x = g.tensor("keyed", [1, N], np.float32)
    idx = g.tensor("index", [size], np.int32, inv_a[lin.indices][:size].astype(np.int32))
    gathered = g.tensor("plain", [1, size], np.float32)
    opts = fb.GatherOptionsT()
    opts.axis = 1
    g.op(fb.BuiltinOperator.GATHER, [x, idx], [gathered], fb.BuiltinOptions.GatherOptions, opts)
    gain = g.tensor("gain", [1, size], np.float32, lin.data[None, :size].astype(np.float32))
    scaled = g.tensor("scaled", [1, size], np.float32)
    g.op(fb.BuiltinOperator.MUL, [gathered, gain], [scaled], fb.BuiltinOptions.MulOptions, fb.MulOptionsT())
    offset = g.tensor("offset", [1, size], np.float32, s.offset()[None, :size].astype(np.float32))
    out = g.tensor("rekeyed", [1, size], np.float32)
    g.op(fb.BuiltinOperator.ADD, [scaled, offset], [out], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())
    if meta is None:
        meta = {"input_key_fingerprint": a.fingerprint, "output_key_fingerprint": s.fingerprint}
    return g.finish([x], [out], meta)


@pytest.fixture
def staged(tmp_path, device_dir):
    """(device dir, A key path, stage path): the frames are keyed with A, the stage re-keys them to S."""
    a = Key(N, [Permutation(np.random.default_rng(7).permutation(N))], "sensor")
    s = load_sensor_key(device_dir / "sensor.key")
    (tmp_path / "a.key").write_bytes(a.to_bytes())
    (tmp_path / "stage.tflite").write_bytes(_stage_bytes(a, s))
    return device_dir, tmp_path / "a.key", tmp_path / "stage.tflite", a, s


def _run(config, collect, frames: int) -> list[dict]:
    run = Running(config, max_frames=frames)
    run.thread.join(40)
    summary = run.stop()
    assert summary["frames"] == frames and summary["alarms"] == 0, summary
    preds = collect.of("prediction")
    collect.records.clear()
    return preds


@pytest.mark.timeout(90)
def test_stage_runs_before_the_model_and_keeps_its_predictions(tmp_path, staged, collect):
    from edge.labels import labels_for
    from hardware.camera.samples import load_samples

    device, a_path, stage_path, _, _ = staged
    plain = _run(write_config(tmp_path, device), collect, 200)
    cfg = write_config(tmp_path, device, key_stage={"sensor_key": str(a_path)},
                       preprocess={"path": str(stage_path)})
    assert load_config(cfg).preprocess.path == str(stage_path)
    with_stage = _run(cfg, collect, 200)
    top = [[r["top_k"][0]["label"] for r in preds] for preds in (plain, with_stage)]
    agree = np.mean([p == q for p, q in zip(*top)])
    assert agree >= 0.97, agree       # only double ADC rounding differs (A frames, then S in the stage)
    _, labels = load_samples()
    names = labels_for("fashion")
    assert np.mean([names[labels[r["seq"] % len(labels)]] == r["top_k"][0]["label"] for r in with_stage]) > 0.75
    # without the stage, frames keyed with A reach the model directly: the key stage refuses (fail closed)
    cfg = write_config(tmp_path, device, key_stage={"sensor_key": str(a_path)})
    assert not Service(load_config(cfg)).load_context().key_stage.check().ok


def test_stage_output_equals_rekeyed_frames(staged):
    from edge.pipeline import PreprocessStage
    from edge.runtime import TFLiteModel
    from hardware.preadc import adc

    _, _, stage_path, a, s = staged
    stage = PreprocessStage(TFLiteModel(stage_path), str(stage_path))
    x = np.random.default_rng(1).random(N)
    keyed = adc(a.apply(x))
    out = stage(keyed)
    assert out.dtype == np.uint8 and out.shape == (N,)
    want = adc(s.apply(a.apply_inverse(keyed / 255.0))).astype(int)       # float64 reference of the stage
    assert np.abs(out.astype(int) - want).max() <= 1 and np.mean(out == want) > 0.99
    assert np.abs(out.astype(int) - adc(s.apply(x)).astype(int)).max() <= 1    # vs keying with S directly


def test_config_validation(tmp_path, device_dir, staged):
    _, _, stage_path, _, _ = staged
    assert load_config(write_config(tmp_path, device_dir)).preprocess is None          # off by default
    for section, message in (({"path": str(tmp_path / "none.tflite")}, "file not found"),
                             ({"path": str(stage_path), "threads": 2}, "unknown key threads"),
                             ({"path": str(stage_path), "num_threads": 0}, "must be 1..64"),
                             ({}, "preprocess.path: required key is missing")):
        with pytest.raises(ConfigError, match=message):
            load_config(write_config(tmp_path, device_dir, preprocess=section))


def test_mismatched_or_unkeyed_stages_are_refused(tmp_path, staged):
    device, a_path, _, a, s = staged
    cases = {"wrong_out.tflite": (_stage_bytes(a, s, {"input_key_fingerprint": a.fingerprint,
                                                      "output_key_fingerprint": a.fingerprint}), "--key"),
             "unkeyed.tflite": (_stage_bytes(a, s, {}), "must be a keyed stage"),
             "short.tflite": (_stage_bytes(a, s, size=N - 4), "emits 780 values")}
    for name, (blob, message) in cases.items():
        (tmp_path / name).write_bytes(blob)
        cfg = load_config(write_config(tmp_path, device, key_stage={"sensor_key": str(a_path)},
                                       preprocess={"path": str(tmp_path / name)}))
        with pytest.raises(ModelError, match=message):
            Service(cfg, max_frames=1).run()
