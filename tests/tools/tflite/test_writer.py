"""TFLite writer: round trips through the real interpreter, int8 accuracy, and no key or weight in clear."""
from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb

from edge.runtime import TFLiteModel
from hardware.digitise import key_and_digitise
from keys.factors import ChannelGenPerm, Permutation
from tests.kits.onnx import SECRET
from tools.ir import Conv, Dense, forward
from tools.keying.keyed import derive_keyset, key_network
from tools.onnx_import import load_onnx
from tools.tflite.writer import write_tflite


def run_tflite(blob: bytes, frames: np.ndarray) -> np.ndarray:
    return TFLiteModel(blob).predict(frames.astype(np.float32))


@pytest.mark.parametrize("profile", [None, "full", "stem", "mix15"])
def test_float_round_trip_matches_numpy(small_cnn, frames, profile):
    net = load_onnx(small_cnn)
    x = frames.reshape(len(frames), -1)
    if profile:
        ks = derive_keyset(SECRET, "d", "m", net, profile)
        net, x = key_network(net, ks), ks.sensor.apply(x)
    blob, report = write_tflite(net, metadata={"model_id": "abc"})
    assert np.max(np.abs(run_tflite(blob, x) - forward(net, x))) < 1e-5
    assert TFLiteModel(blob).metadata["model_id"] == "abc"
    if profile == "full":
        assert any("sparse" in r["op"] for r in report)


@pytest.mark.parametrize("profile", [None, "full", "stem", "mix15"])
@pytest.mark.parametrize("encrypt", [False, True])
def test_int8_tracks_float(small_cnn, rng, profile, encrypt):
    net = load_onnx(small_cnn)
    x = rng.uniform(size=(300, 144))
    if profile:
        ks = derive_keyset(SECRET, "d", "m", net, profile, encrypt)
        net, x = key_network(net, ks), key_and_digitise(ks.sensor, x) / 255.0
    blob, report = write_tflite(net, int8=True, calib=x[:200], sparse_ell=profile == "mix15")
    model = TFLiteModel(blob)
    assert model.input_dtype == np.int8
    want, got = forward(net, x[200:]), model.predict((x[200:] * 255).round().astype(np.uint8))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 0.08
    assert np.mean(got.argmax(1) == want.argmax(1)) > 0.85
    float_ops = [r for r in report if r["dtype"] == "float32"]
    assert all(r.get("why") for r in float_ops)      # whatever stays float in an int8 model says why
    assert all("sparse" in r["op"] or r["op"] == "LEAKY_RELU" for r in float_ops)
    if profile == "mix15":                      # the sensor stage: int8 GATHER + DEPTHWISE_CONV_2D
        assert "sparse ELL" in report[0]["op"] and report[0]["dtype"] == "int8"


def tensors_in(blob: bytes):
    """Yield (name, numpy values) of every constant tensor in a .tflite file."""
    model = fb.ModelT.InitFromPackedBuf(blob, 0)
    kinds = {fb.TensorType.FLOAT32: np.float32, fb.TensorType.INT8: np.int8, fb.TensorType.INT16: np.int16,
             fb.TensorType.INT32: np.int32}
    for t in model.subgraphs[0].tensors:
        data = model.buffers[t.buffer].data
        if data is not None and len(data):
            values = np.frombuffer(bytes(data), kinds[t.type])
            q = t.quantization
            if q is not None and q.scale is not None and len(q.scale) and t.sparsity is None:   # dequantize
                scale = np.asarray(q.scale)
                values = (values.reshape(len(scale), -1) * scale[:, None]).reshape(-1) if len(scale) > 1 \
                    else values * scale[0]
            yield t.name.decode() if isinstance(t.name, bytes) else t.name, values
        if t.sparsity is not None:
            for dim in t.sparsity.dimMetadata:
                for vec in (dim.arraySegments, dim.arrayIndices):
                    if vec is not None:
                        yield f"{t.name}/index", np.asarray(vec.values)


def same_up_to_scale_and_permutation(a: np.ndarray, b: np.ndarray, tol: float = 2e-2) -> bool:
    """True when a equals c * P b for some scalar c and element permutation P (within tol)."""
    if a.size != b.size or a.size < 8:
        return False
    sa, sb = np.sort(np.abs(a.astype(np.float64))), np.sort(np.abs(b.astype(np.float64)))
    if sa[-1] == 0 or sb[-1] == 0:
        return False
    return bool(np.max(np.abs(sa / sa[-1] - sb / sb[-1])) < tol)


def leaks(blob: bytes, net, keyset) -> list[str]:
    """Names of tensors that are an original weight (up to scale/permutation) or a stored key permutation."""
    weights = [l.weight for l in net.layers if isinstance(l, (Conv, Dense))]
    perms = []
    for key in [keyset.sensor, *keyset.layers]:
        for f in key.factors:
            if isinstance(f, (Permutation, ChannelGenPerm)):
                perms += [f.perm, f.inv]
    found = []
    for name, values in tensors_in(blob):
        if any(same_up_to_scale_and_permutation(values, w.reshape(-1)) for w in weights):
            found.append(f"{name}: original weight")
        if any(values.size == p.size and np.array_equal(values.astype(np.int64), p) for p in perms if p.size > 4):
            found.append(f"{name}: key permutation")
    for p in perms:             # nor as raw bytes anywhere in the file, in any index width
        for dtype in (np.int32, np.int64, np.uint16):
            if p.size > 4 and p.max() < np.iinfo(dtype).max and p.astype(dtype).tobytes() in blob:
                found.append(f"raw bytes: key permutation as {np.dtype(dtype).name}")
    return found


@pytest.mark.parametrize("profile", ["full", "stem", "mix15"])
@pytest.mark.parametrize("int8", [False, True])
def test_no_key_and_no_original_weight_in_clear(small_cnn, rng, profile, int8):
    net = load_onnx(small_cnn)
    ks = derive_keyset(SECRET, "d", "m", net, profile)
    keyed = key_network(net, ks)
    x = key_and_digitise(ks.sensor, rng.uniform(size=(100, 144))) / 255.0
    blob, _ = write_tflite(keyed, int8=int8, calib=x, sparse_ell=profile == "mix15")
    assert leaks(blob, net, ks) == []
    # the check can fail: the unkeyed model and a model storing the key both trip it
    plain_blob, _ = write_tflite(net, int8=int8, calib=x)
    assert any("original weight" in leak for leak in leaks(plain_blob, net, ks))
    sensor_perm = next(f for f in ks.sensor.factors if isinstance(f, Permutation)).perm
    assert leaks(blob + sensor_perm.astype(np.int32).tobytes(), net, ks)


def test_bad_inputs_to_the_writer_and_runtime(small_cnn, tmp_path):
    net = load_onnx(small_cnn)
    with pytest.raises(Exception, match="calibration frames"):
        write_tflite(net, int8=True)
    with pytest.raises(Exception, match="not found"):
        TFLiteModel(tmp_path / "missing.tflite")
    with pytest.raises(Exception, match="cannot load TFLite model"):
        TFLiteModel(b"TFL3" + b"\x00" * 64)
    model = TFLiteModel(write_tflite(net)[0])
    with pytest.raises(Exception, match="expects 144"):
        model.invoke(np.zeros(10, np.uint8))


@pytest.mark.parametrize("int8", [False, True])
def test_gather_lowers_to_nhwc_and_to_vectors(rng, int8):
    from tools.ir import Flatten, Gather, Network
    perm = rng.permutation(2 * 6 * 6)
    w = rng.normal(size=(3, 2, 3, 3)) * 0.3
    net = Network((72,), [Gather(perm, (2, 6, 6)), Conv(w, np.zeros(3), (1, 1), (1, 1, 1, 1), "relu"), Flatten(),
                          Gather(rng.permutation(108)[:10], (10,))])
    x = rng.uniform(size=(16, 72))
    blob, ops = write_tflite(net, int8=int8, calib=x if int8 else None)
    assert [o["op"].split()[0] for o in ops if o["layer"] in (0, 3)] == ["GATHER", "GATHER"]
    got, want = run_tflite(blob, x), forward(net, x)
    assert np.max(np.abs(got - want)) < (0.05 if int8 else 1e-5) * max(1.0, np.abs(want).max())


def test_gather_moves_aligned_runs_as_rows(rng):
    from tools.ir import Gather, Network
    pixels = rng.permutation(24)                            # 24 pixels of 3 values each, moved whole
    index = (pixels[:, None] * 3 + np.arange(3)).reshape(-1)
    net = Network((72,), [Gather(index, (72,))])
    x = rng.uniform(size=(4, 72))
    blob, ops = write_tflite(net)
    assert ops[0]["op"] == "GATHER (24 rows of 3)"
    assert np.allclose(run_tflite(blob, x), x[:, index], atol=1e-6)
