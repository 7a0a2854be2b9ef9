"""The int8 sparse layer (ELL: GATHER + DEPTHWISE_CONV_2D) against numpy W x + b on the real interpreter, row groups
sharing a support (depth multiplier), int16 / int32 indices, bad inputs, and that the default XNNPACK delegate
leaves its depthwise conv alone."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from base.errors import ModelError
from edge.runtime import TFLiteModel
from tools.tflite.builder import GraphBuilder, quant_params
from tools.tflite.sparse_int8 import ell_form, regrouped_ell_form, sparse_int8_layer
from tools.tflite.writer import INPUT_QUANT, act_quant, weight_quant

ROWS, COLS = 700, 400


def _matrix(rows: int = ROWS, cols: int = COLS, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """A random sparse matrix with 0..30 non-zeros per row (one empty row) and a bias."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 31, rows)
    counts[3] = 0
    cols_of = [rng.choice(cols, c, replace=False) for c in counts]
    w = sp.csr_matrix((rng.normal(size=counts.sum()) * rng.uniform(0.1, 3, counts.sum()), np.concatenate(cols_of),
                       np.concatenate([[0], np.cumsum(counts)])), shape=(rows, cols))
    return w, rng.normal(size=rows) * 0.5


def _grouped(groups: int = 60, m: int = 6, cols: int = COLS, seed: int = 5) -> tuple[sp.csr_matrix, np.ndarray]:
    """Aligned blocks of m rows sharing one column support (a conv's channels at one position), 4..20 per row."""
    rng = np.random.default_rng(seed)
    supports = [np.sort(rng.choice(cols, rng.integers(4, 21), replace=False)) for _ in range(groups)]
    rows = [(g * m + r, c) for g, sup in enumerate(supports) for r in range(m) for c in sup]
    r, c = np.array(rows).T
    return sp.csr_matrix((rng.normal(size=len(r)), (r, c)), shape=(groups * m, cols)), rng.normal(size=groups * m)


def _model(w, bias, out_quant, int16: bool = True, regroup: bool = False) -> bytes:
    g = GraphBuilder()
    x = g.tensor("x", [1, w.shape[1]], np.int8, quant=quant_params(*INPUT_QUANT))
    out = sparse_int8_layer(g, x, INPUT_QUANT, w, bias, out_quant, "layer", int16_indices=int16, regroup=regroup)
    return g.finish([x], [out], {})


def _inputs(n: int, count: int = 8) -> np.ndarray:
    """uint8 input vectors (exact on the input scale 1/255)."""
    return np.random.default_rng(1).integers(0, 256, (count, n)).astype(np.uint8)


def test_ell_form_keeps_every_non_zero():
    w, _ = _matrix()
    ell = ell_form(w)
    assert ell.taps == np.diff(w.indptr).max() == ell.index.shape[0] and ell.index.shape[1] == ROWS
    x = np.random.default_rng(2).random(COLS)
    assert np.allclose((ell.weight * x[ell.index]).sum(axis=0), w @ x)
    assert np.all(ell.weight[:, 3] == 0) and ell_form(sp.csr_matrix((2, 5))).taps == 1


@pytest.mark.parametrize("make", [_matrix, _grouped], ids=["rows", "row-groups"])
def test_int8_layer_matches_numpy_within_the_quantisation_bound(make):
    w, bias = make()
    frames = _inputs(COLS)
    want = (w @ (frames.T / 255.0)).T + bias
    lo, hi = float(want.min()), float(want.max())
    out_quant = act_quant(lo, hi)
    model = TFLiteModel(_model(w, bias, out_quant))
    got = model.predict(frames)
    # bound per row: weight rounding (half a weight step per tap, |x| <= 1), bias rounding, output rounding
    # and the requantisation's fixed-point multiplier (one more output step)
    ell = ell_form(w)
    _, ws = weight_quant(ell.weight.T)
    taps = np.diff(w.indptr)
    bound = taps * ws / 2 + INPUT_QUANT[0] * ws / 2 + 1.5 * out_quant[0]
    err = np.abs(got - want)
    assert np.all(err <= bound + 1e-9), float((err - bound).max())
    assert err.max() / (hi - lo) < 0.02                  # measured ~0.5% of the output range
    if make is _matrix:
        assert ell.multiplier == 1 and np.abs(got[:, 3] - bias[3]).max() <= out_quant[0]   # an empty row: its bias
    else:
        assert ell.multiplier == 6 and ell.index.shape[1] == 60     # one gathered column list per group


def test_row_groups_must_be_aligned():
    w, _ = _grouped(groups=4, m=3)
    assert ell_form(w).multiplier == 3
    shifted = sp.vstack([sp.csr_matrix(w[:1]), w]).tocsr()    # 13 rows: blocks of 3 no longer aligned
    assert ell_form(shifted).multiplier == 1 and ell_form(w[:3]).multiplier == 3


def test_int16_and_int32_indices_agree_and_int16_halves_them():
    from ai_edge_litert import schema_py_generated as fb

    w, bias = _matrix(seed=3)
    frames = _inputs(COLS, 3)
    quant = act_quant(-20.0, 20.0)
    small, large = _model(w, bias, quant, int16=True), _model(w, bias, quant, int16=False)
    assert np.array_equal(TFLiteModel(small).predict(frames), TFLiteModel(large).predict(frames))
    index_bytes = ell_form(w).index.size * 2
    assert len(large) - len(small) >= index_bytes
    types = {t.name.decode(): t.type for t in fb.ModelT.InitFromObj(fb.Model.GetRootAs(small, 0)).subgraphs[0].tensors}
    assert types["layer/ell_index"] == fb.TensorType.INT16
    # more columns than int16 can index: int32 whatever was asked
    wide = sp.csr_matrix(([1.0, 2.0], ([0, 1], [5, 40000])), shape=(2, 40001))
    types = {t.name.decode(): t.type for t in
             fb.ModelT.InitFromObj(fb.Model.GetRootAs(_model(wide, np.zeros(2), quant), 0)).subgraphs[0].tensors}
    assert types["layer/ell_index"] == fb.TensorType.INT32


def test_the_default_delegate_does_not_take_the_depthwise_conv():
    """XNNPACK (TFLiteModel's AUTO resolver) claims an int8 DEPTHWISE_CONV_2D whose int32 bias has quantisation
    parameters and runs this shape slower; the layer writes its bias without them, so the conv stays on the
    builtin kernel (the same model with them is delegated)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    w, bias = _matrix(seed=4)
    blob = _model(w, bias, act_quant(-20.0, 20.0))

    def delegated(blob: bytes) -> bool:
        ops = TFLiteModel(blob).interpreter._get_ops_details()
        conv = next(op for op in ops if op["op_name"] == "DEPTHWISE_CONV_2D")
        return any(set(conv["inputs"]) & set(op["inputs"]) for op in ops if op["op_name"] == "DELEGATE")

    assert not delegated(blob)
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(blob, 0))
    bias_tensor = next(t for t in model.subgraphs[0].tensors if t.name == b"layer/b")
    bias_tensor.quantization = quant_params(np.ones(ROWS), np.zeros(ROWS, int), 0)
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    assert delegated(bytes(builder.Output()))


def test_bad_inputs():
    w, bias = _matrix()
    g = GraphBuilder()
    x = g.tensor("x", [1, COLS + 1], np.int8, quant=quant_params(*INPUT_QUANT))
    with pytest.raises(ModelError, match=f"takes an int8 \\[1, {COLS}\\] vector"):
        sparse_int8_layer(g, x, INPUT_QUANT, w, bias, (0.1, 0), "bad")
    x = g.tensor("f", [1, COLS], np.float32)
    with pytest.raises(ModelError, match="int8"):
        sparse_int8_layer(g, x, INPUT_QUANT, w, bias, (0.1, 0), "bad")
    x = g.tensor("y", [1, COLS], np.int8, quant=quant_params(*INPUT_QUANT))
    with pytest.raises(ModelError, match="bias has 3 values"):
        sparse_int8_layer(g, x, INPUT_QUANT, w, bias[:3], (0.1, 0), "bad")


def test_a_sensor_key_inverse_regroups_its_scattered_rows_and_runs_in_int8():
    from keys.drbg import Drbg
    from keys.generate import KeyConfig, sensor_key
    key = sensor_key(Drbg(bytes(32), "s"), (1, 28, 28), KeyConfig(scatter=15, mixing="multiplex"))
    w = key.inverse_linear_csr()
    bias = -(w @ key.offset())
    assert ell_form(w).multiplier == 1                        # a group's pixels are scattered: no aligned blocks
    ell = regrouped_ell_form(w)
    assert ell.multiplier == 15 and ell.index.shape == (15, 52 + 4)      # 52 groups of 15, 4 pixels left alone
    assert sorted(ell.rows) == sorted(set(ell.rows)) and len(ell.rows) == 784
    x = np.random.default_rng(0).random(784)
    channels = (ell.weight * x[ell.index].repeat(ell.multiplier, axis=1)).sum(axis=0)
    assert np.allclose(channels[ell.rows], w @ x)
    frames = np.clip(key.apply(np.random.default_rng(1).random((8, 784))) * 255, 0, 255).round().astype(np.uint8)
    want = (w @ (frames.T / 255.0)).T + bias                  # the plain frame, up to the 8-bit keyed input
    quant = act_quant(float(want.min()), float(want.max()))
    small = _model(w, bias, quant, regroup=True)
    got = TFLiteModel(small).predict(frames)
    _, ws = weight_quant(ell.weight.T)                        # the same bound as for any sparse layer, per row
    bound = (np.diff(w.indptr) * ws[ell.rows] / 2 + INPUT_QUANT[0] * ws[ell.rows] / 2 + 1.5 * quant[0])
    assert np.all(np.abs(got - want) <= bound + 1e-9)
    assert np.abs(got - want).mean() < 0.02                   # measured 0.010 of a [0, 1] frame (int8 weights)
    assert np.abs(got - TFLiteModel(_model(w, bias, quant)).predict(frames)).max() <= 2 * quant[0]
    assert len(small) < len(_model(w, bias, quant))           # one index list per group, not per row
    assert regrouped_ell_form(_grouped()[0]).rows is None     # aligned blocks keep the plain ELL form
