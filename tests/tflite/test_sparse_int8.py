"""The int8 sparse layer (ELL: GATHER + DEPTHWISE_CONV_2D) against numpy W x + b on the real interpreter, its
int16 / int32 indices, bad inputs, and that the default XNNPACK delegate leaves its depthwise conv alone."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from edge.errors import ModelError
from edge.runtime import TFLiteModel
from tools.tflite.builder import GraphBuilder, quant_params
from tools.tflite.sparse_int8 import ell_form, sparse_int8_layer
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


def _model(w, bias, out_quant, int16: bool = True) -> bytes:
    g = GraphBuilder()
    x = g.tensor("x", [1, w.shape[1]], np.int8, quant=quant_params(*INPUT_QUANT))
    out = sparse_int8_layer(g, x, INPUT_QUANT, w, bias, out_quant, "layer", int16_indices=int16)
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


def test_int8_layer_matches_numpy_within_the_quantisation_bound():
    w, bias = _matrix()
    frames = _inputs(COLS)
    want = (w @ (frames.T / 255.0)).T + bias
    lo, hi = float(want.min()), float(want.max())
    out_quant = act_quant(lo, hi)
    model = TFLiteModel(_model(w, bias, out_quant))
    got = model.predict(frames)
    # bound per row: weight rounding (half a weight step per tap, |x| <= 1), bias rounding, output rounding
    # and the requantisation's fixed-point multiplier (one more output step)
    _, ws = weight_quant(ell_form(w).weight.T)
    taps = np.diff(w.indptr)
    bound = taps * ws / 2 + INPUT_QUANT[0] * ws / 2 + 1.5 * out_quant[0]
    err = np.abs(got - want)
    assert np.all(err <= bound + 1e-9), float((err - bound).max())
    assert err.max() / (hi - lo) < 0.02                  # measured ~0.5% of the output range
    assert np.abs(got[:, 3] - bias[3]).max() <= out_quant[0]      # an empty row is its bias


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
    """XNNPACK (TFLiteModel's AUTO resolver) claims int8 DEPTHWISE_CONV_2D with a constant bias and runs this
    shape slower; the layer feeds its bias through a RESHAPE so the conv stays on the builtin kernel."""
    w, bias = _matrix(seed=4)
    model = TFLiteModel(_model(w, bias, act_quant(-20.0, 20.0)))
    ops = model.interpreter._get_ops_details()
    conv = next(op for op in ops if op["op_name"] == "DEPTHWISE_CONV_2D")
    delegated = [set(op["inputs"]) for op in ops if op["op_name"] == "DELEGATE"]
    assert not any(set(conv["inputs"]) & d for d in delegated)


def test_bad_inputs():
    w, bias = _matrix()
    g = GraphBuilder()
    x = g.tensor("x", [1, COLS + 1], np.int8, quant=quant_params(*INPUT_QUANT))
    with pytest.raises(ModelError, match=f"takes a \\[1, {COLS}\\] vector"):
        sparse_int8_layer(g, x, INPUT_QUANT, w, bias, (0.1, 0), "bad")
    x = g.tensor("y", [1, COLS], np.int8, quant=quant_params(*INPUT_QUANT))
    with pytest.raises(ModelError, match="bias has 3 values"):
        sparse_int8_layer(g, x, INPUT_QUANT, w, bias[:3], (0.1, 0), "bad")
