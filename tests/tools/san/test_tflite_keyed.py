"""The keyed SAN stage, keyed and written through the shared IR / keying / writer (tools.san.stage) (sparse keyed
layers, committed weights, real LFW faces): keyed == key(plain) in float, int8
keyed ~ key(plain int8) and torch, no key / original weight in clear (an un-keying GATHER is refused), refusal of
non-permutation keys, the edge preprocess stage (float and int8) and the CLI."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch
S = 64
N = 3 * S * S


def _perm_key(seed: int, n: int = N):
    from keys.factors import Key, Permutation

    return Key(n, [Permutation(np.random.default_rng(seed).permutation(n))], "sensor")


def _float_values(blob: bytes) -> np.ndarray:
    """Every 4-byte-aligned float32 value of every buffer of a .tflite."""
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    parts = [np.asarray(b.data, np.uint8) for b in model.buffers if b.data is not None]
    return np.concatenate([p[:len(p) // 4 * 4].view(np.float32) for p in parts])


def _unkeying_gather_blob(key, dtype) -> bytes:
    """The insecure form: a GATHER that un-keys the frame (its indices are K's frame index)."""
    from ai_edge_litert import schema_py_generated as fb

    from tools.san.key_checks import permutation_of
    from tools.tflite.builder import GraphBuilder
    from tools.tflite.sparse_int8 import index_tensor
    from tools.tflite.writer import hwc_to_chw_order

    index = np.argsort(permutation_of(key, N)[hwc_to_chw_order((3, S, S))])      # keyed position of each pixel
    g = GraphBuilder()
    x, out = g.tensor("x", [1, N], np.float32), g.tensor("y", [1, N], np.float32)
    idx = index_tensor(g, "i", [N], index, int16=dtype == np.int16)
    opts = fb.GatherOptionsT()
    opts.axis = 1
    g.op(fb.BuiltinOperator.GATHER, [x, idx], [out], fb.BuiltinOptions.GatherOptions, opts)
    return g.finish([x], [out], {})


def _ops(blob: bytes) -> list[str]:
    """The op labels of the writer's report embedded in a .tflite."""
    from edge.runtime import TFLiteModel

    return [r["op"] for r in TFLiteModel(blob).metadata["ops"]]


@pytest.fixture(scope="module")
def setup():
    from tools.san.data import load_faces64
    from tools.san.export import make_stage
    from tools.san.model_io import PAPERS_MODEL, load_ensemble
    from tools.san.stage import write_keyed_san_tflite, write_san_tflite

    ensemble = load_ensemble(PAPERS_MODEL)
    test = load_faces64("test", limit=60)
    stage = make_stage(ensemble, 0, "female", S, strength=2.5, change="differential")     # the deployed form
    key = _perm_key(1)
    return (ensemble, stage, test.images[test.gender == 0][:6], key, write_san_tflite(stage, False),
            write_keyed_san_tflite(stage, key, {"gender": "female"}, secret=bytes(32)))


@pytest.fixture(scope="module")
def int8(setup):
    """(calibration faces, the unkeyed int8 stage, the int8 keyed stage) for the setup's stage and key."""
    from tools.san.data import load_faces64
    from tools.san.stage import write_keyed_san_tflite, write_san_tflite

    _, stage, _, key, _, _ = setup
    train = load_faces64("train", limit=200)
    calib = train.images[train.gender == 0]
    return (calib, write_san_tflite(stage, True, calib),
            write_keyed_san_tflite(stage, key, {"gender": "female"}, secret=bytes(32), int8=True, calib_faces=calib))


def test_keyed_stage_equals_the_key_of_the_plain_stage(setup):
    from base.errors import ModelError
    from edge.pipeline import PreprocessStage
    from edge.runtime import TFLiteModel
    from tools.san.export import make_stage
    from tools.san.stage import write_keyed_san_tflite, write_san_tflite
    from tools.san.tflite_check import compare_keyed, compare_with_torch, key_frame

    ensemble, stage, faces, key, plain, keyed = setup
    assert compare_keyed(plain, keyed, key, key, faces) < 1e-5
    meta = TFLiteModel(keyed).metadata
    assert meta["change"] == "differential" and _ops(keyed).count("LOGISTIC") == 2        # X_OP's and X_SM's heads
    residual = make_stage(ensemble, 0, "female", S, strength=0.7, change="residual")   # the papers' form
    assert compare_keyed(write_san_tflite(residual, False), write_keyed_san_tflite(residual, key, secret=bytes(32)),
                         key, key, faces[:2]) < 1e-5
    assert compare_with_torch(stage, keyed, faces, key, key)["max_abs"] < 1e-5
    again = write_keyed_san_tflite(stage, key, {"gender": "female"}, secret=bytes(32))
    assert again == keyed                                                   # deterministic for a given secret
    other = write_keyed_san_tflite(stage, key, {"gender": "female"}, secret=bytes(range(32)))
    assert other != keyed and compare_keyed(plain, other, key, key, faces[:2]) < 1e-5
    model = TFLiteModel(keyed)
    assert model.metadata["input_key_fingerprint"] == model.metadata["output_key_fingerprint"] == key.fingerprint
    assert {"FULLY_CONNECTED(sparse", "LOGISTIC", "LEAKY_RELU"} <= {op.split(" ")[0] for op in _ops(keyed)}
    # the edge preprocess stage runs it: keyed face in, the face's X_OP keyed with the same key out (uint8)
    pre = PreprocessStage(model, "san.tflite")
    pre.check_feeds(TFLiteModel(plain), key.fingerprint)                # feeds a 64x64x3 model keyed with K
    with pytest.raises(ModelError, match="keycam san export --key"):
        pre.check_feeds(TFLiteModel(plain), _perm_key(9).fingerprint)
    got = pre(key_frame(key, faces[0])).reshape(S, S, 3).astype(int)
    want = key_frame(key, np.clip(np.rint(TFLiteModel(plain).invoke(faces[0]) * 255), 0, 255)
                     .astype(np.uint8).reshape(S, S, 3)).astype(int)
    assert np.abs(got - want).max() <= 1
    # the plain stage on a keyed frame is not the keyed stage: the key matters
    keyed_face = key_frame(key, faces[0])
    assert np.abs(TFLiteModel(plain).invoke(keyed_face) - model.invoke(keyed_face)).mean() > 0.01


def test_no_key_and_no_original_weight_in_clear(setup, int8):
    from tools.san.key_checks import clear_key_findings, frame_index

    ensemble, _, _, key, plain, keyed = setup
    assert clear_key_findings(keyed, key, S) == [] and clear_key_findings(int8[2], key, S) == []
    # the check can fail: stored index vectors (whole or a run of 16) and an un-keying GATHER trip it
    perm = key.factors[0].perm
    head = keyed[:5000]                                   # model bytes, then the stored run at an odd offset
    assert clear_key_findings(head + frame_index(perm, S).astype(np.int32).tobytes(), key, S)
    assert clear_key_findings(head + np.argsort(perm)[100:116].astype(np.uint16).tobytes(), key, S)
    assert clear_key_findings(head + perm[300:316].astype(np.int16).tobytes(), key, S) == ["permutation as uint16"]
    for dtype, found in ((np.int32, "inverse frame index as int32"), (np.int16, "inverse frame index as uint16")):
        assert found in clear_key_findings(_unkeying_gather_blob(key, dtype), key, S)
    # no conv weight of the autoencoder is stored as such (each keyed entry carries gains); the plain stage has them
    member = ensemble.members[0]
    stored = [member.enc1.weight[:, :3], member.enc2.weight, member.dec1.weight, member.dec2.weight,
              member.head.weight[:, :-3]]                    # the prototype halves live in per-position constants
    weights = np.concatenate([w.detach().numpy().reshape(-1) for w in stored]).astype(np.float32)
    weights = weights[np.abs(weights) > 1e-3]
    assert np.isin(weights, _float_values(plain)).mean() > 0.99
    values = _float_values(keyed)          # ~2M stored floats: some weights coincide by chance, as their neighbours do
    chance = np.mean([np.isin(np.nextafter(np.nextafter(weights, d), d), values).mean()
                      for d in np.float32([-1, 1]) * np.inf])
    assert np.isin(weights, values).mean() < min(0.05, 2 * chance + 0.005)


def test_refuses_keys_that_are_not_pixel_permutations(setup):
    from keys.factors import Bias, Gain, Key, Permutation
    from tools.san.errors import SanModelError
    from tools.san.stage import write_keyed_san_tflite

    _, stage, _, _, _, _ = setup
    for extra in (Gain(np.full(N, 0.5)), Bias(np.full(N, 0.1))):
        with pytest.raises(SanModelError, match="not a pixel permutation"):
            write_keyed_san_tflite(stage, Key(N, [Permutation(np.arange(N)), extra]))
    with pytest.raises(SanModelError, match="acts on 12 values"):
        write_keyed_san_tflite(stage, _perm_key(0, 12))


def test_working_size_stage_has_no_pool_or_upsample_layer(setup, int8):
    from tools.san.export import make_stage
    from tools.san.key_checks import clear_key_findings
    from tools.san.stage import write_keyed_san_tflite, write_san_tflite
    from tools.san.tflite_check import compare_keyed

    ensemble, _, faces, _, _, full = setup
    stage = make_stage(ensemble, 1, "male", 32, strength=1.0)
    key = _perm_key(5, 3 * 32 * 32)
    small = np.ascontiguousarray(faces[:3, ::2, ::2])
    keyed = write_keyed_san_tflite(stage, key, secret=bytes(32))
    assert compare_keyed(write_san_tflite(stage, False), keyed, key, key, small) < 1e-5
    assert clear_key_findings(keyed, key, 32) == []
    calib = np.ascontiguousarray(int8[0][:, ::2, ::2])                     # int8: no down layer, P_s = T
    keyed8 = write_keyed_san_tflite(stage, key, secret=bytes(32), int8=True, calib_faces=calib)
    assert compare_keyed(write_san_tflite(stage, True, calib), keyed8, key, key, small) < 0.08
    def sparse_layers(blob: bytes) -> int:
        return sum(op.startswith("FULLY_CONNECTED") for op in _ops(blob))

    assert sparse_layers(keyed) == 7 and sparse_layers(full) == 9       # the 64x64 stage adds down and up
    assert sum(op.startswith("GATHER") for op in _ops(keyed8)) == 7


def test_cli_export_keyed(tmp_path):
    from click.testing import CliRunner

    from edge.runtime import TFLiteModel
    from keycam.cli import cli
    from keys.factors import Gain, Key, Permutation

    (tmp_path / "k.key").write_bytes(_perm_key(3).to_bytes())
    (tmp_path / "gain.key").write_bytes(Key(N, [Permutation(np.arange(N)), Gain(np.full(N, 0.5))]).to_bytes())
    from tools.san.model_io import PAPERS_MODEL

    model_args = ["--model", str(PAPERS_MODEL)]
    args = ["san", "export", *model_args, "--gender", "female", "--tflite", str(tmp_path / "san.tflite"), "--check", "3",
            "--calib", "24"]
    for extra, dtype, compared in (([], "int8", "unkeyed int8 stage"), (["--float"], "float32", "unkeyed float stage")):
        result = CliRunner().invoke(cli, args + ["--key", str(tmp_path / "k.key")] + extra)
        assert result.exit_code == 0, result.output
        assert "no run of the key's permutation" in result.output and compared in result.output
        model = TFLiteModel(tmp_path / "san.tflite")
        meta = model.metadata
        assert meta["gender"] == "female" and meta["output_key_fingerprint"] == _perm_key(3).fingerprint
        assert meta["dtype"] == dtype and model.input_dtype == np.dtype(np.int8 if dtype == "int8" else np.float32)
    result = CliRunner().invoke(cli, args + ["--key", str(tmp_path / "gain.key")])
    assert result.exit_code != 0 and "not a pixel permutation" in result.output, result.output
    result = CliRunner().invoke(cli, ["san", "export", *model_args, "--gender", "male", "--out", str(tmp_path / "s.onnx"),
                                      "--key", str(tmp_path / "k.key")])
    assert result.exit_code != 0 and "give --tflite" in result.output
    result = CliRunner().invoke(cli, ["san", "export", *model_args, "--gender", "male"])
    assert result.exit_code != 0 and "nothing to write" in result.output


def test_int8_keyed_stage_is_the_key_of_the_int8_stage(setup, int8):
    """int8 keyed (GATHER + DEPTHWISE_CONV_2D sparse layers, hidden gains in [0.5, 2]) against torch and against K
    applied to the unkeyed int8 stage; the edge preprocess stage runs it on keyed uint8 frames."""
    from edge.pipeline import PreprocessStage
    from edge.runtime import TFLiteModel
    from tools.san.errors import SanModelError
    from tools.san.metrics import ssim
    from tools.san.stage import write_keyed_san_tflite
    from tools.san.tflite_check import compare_keyed, compare_with_torch, key_frame, unkey_frame

    _, stage, faces, key, plain, _ = setup
    calib, plain8, keyed8 = int8
    q = compare_with_torch(stage, keyed8, faces, key, key)
    assert q["max_abs"] < 0.07 and q["mean_abs"] < 0.008 and q["ssim"] > 0.99, q      # measured 0.05 / 0.006 / 0.997
    assert compare_keyed(plain8, keyed8, key, key, faces) < 0.08                        # measured 0.055
    model = TFLiteModel(keyed8)
    assert model.input_dtype == np.int8 and model.metadata["dtype"] == "int8"
    assert model.metadata["hidden_gain_range"] == [0.5, 2.0] and len(keyed8) < len(setup[5]) * 0.4
    assert {"FULLY_CONNECTED(sparse", "LOGISTIC", "LEAKY_RELU"} & {op.split(" ")[0] for op in _ops(keyed8)} \
        == {"LOGISTIC", "LEAKY_RELU"} and sum(op.startswith("GATHER + DEPTHWISE") for op in _ops(keyed8)) == 9
    assert all(r["dtype"] == "int8" for r in model.metadata["ops"])                   # nothing stays float
    # on the device: the preprocess stage takes keyed uint8 frames and emits keyed uint8 codes of X_OP
    pre = PreprocessStage(model, "san_int8.tflite")
    pre.check_feeds(TFLiteModel(plain), key.fingerprint)
    got = np.stack([unkey_frame(key, pre(key_frame(key, f)).reshape(S, S, 3).astype(np.float64)) for f in faces])
    want = np.stack([TFLiteModel(plain).invoke(f).reshape(S, S, 3) for f in faces]) * 255.0
    assert np.abs(got - want).max() <= 0.07 * 255 and np.abs(got - want).mean() < 2.0
    assert ssim(np.rint(want).astype(np.uint8), got.astype(np.uint8)).mean() > 0.99
    with pytest.raises(SanModelError, match="needs calibration faces"):
        write_keyed_san_tflite(stage, key, int8=True)
    with pytest.raises(SanModelError, match="must be uint8"):
        write_keyed_san_tflite(stage, key, int8=True, calib_faces=calib[:, ::2, ::2])


def test_structure_attack_still_recovers_the_key_up_to_symmetry(setup):
    """What the sparsity pattern leaks (README): enc1's column supports lay out the 32x32 grid (its 3 colour
    columns per position share a support), the bilinear up layer's coefficients place every keyed pixel inside
    its 2x2 block and link pixels of one channel: the key comes back up to the 8 grid symmetries and the
    channel labels, as for any keyed conv on a permutation-keyed frame. Shown on the residual stage, where the
    working-size face and X_OP share one key (their difference is an Add); in the differential stage the face
    has a key of its own, so the up layer's columns need one more matching step."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    from tools.attacks.grid import adjacency, layout, symmetries
    from tools.attacks.structure import column_groups
    from tools.ir import Dense
    from tools.san.export import make_stage
    from tools.san.stage import keyed_stage_network

    ensemble, _, _, key, _, _ = setup
    stage = make_stage(ensemble, 0, "female", S, strength=0.7, change="residual")
    perm, w = key.factors[0].perm, S // 2
    net = keyed_stage_network(stage, key, bytes(32))       # the matrices the .tflite stores (keyed CHW order)
    dense = {layer.name: layer.weight for layer in net.layers if isinstance(layer, Dense)}
    enc1, up = dense["enc1"], dense["change_up"]
    groups = column_groups(enc1)
    assert sorted({len(g) for g in groups}) == [3] and len(groups) == w * w
    member = sp.csr_matrix((np.ones(3 * w * w), (np.concatenate(groups), np.repeat(np.arange(w * w), 3))))
    windows = sp.csr_matrix(np.unique(((enc1 != 0).astype(np.int32) @ member).toarray() > 0, axis=0).astype(np.int32))
    small = np.empty(3 * w * w, np.int64)
    for g, p in zip(groups, layout(adjacency(windows.T @ windows, 4), w, w)):
        small[g] = p
    est = np.empty(N, np.int64)
    for t in range(N):
        cols, vals = up.indices[up.indptr[t]:up.indptr[t + 1]], up.data[up.indptr[t]:up.indptr[t + 1]]
        y, x = divmod(int(small[cols[np.argmax(vals)]]), w)           # the 9/16 tap: the pixel's own block
        ys = {divmod(int(small[c]), w)[0] for c in cols} - {y}        # the 3/16 taps: which half of the block
        xs = {divmod(int(small[c]), w)[1] for c in cols} - {x}        # (none at the border: the outer half)
        dy, dx = (min(ys) > y if ys else y == w - 1), (min(xs) > x if xs else x == w - 1)
        est[t] = (2 * y + dy) * S + 2 * x + dx
    truth = perm                                                   # keyed unit t holds plain CHW value perm[t]
    assert max(np.mean(sym[truth % (S * S)] == est) for sym in symmetries(S, S)) == 1.0
    parts, label = connected_components(sp.bmat([[None, up], [up.T, None]]), directed=False)
    assert parts == 3 and len(set(zip(label[:N].tolist(), (truth // (S * S)).tolist()))) == 3   # colour channels
