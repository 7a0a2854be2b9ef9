"""The unkeyed SAN stage as TFLite (committed weights, real LFW faces): float and int8 against torch, bad inputs,
strength 0 and 0.5, both change forms (the keyed stage: test_tflite_keyed.py)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch
S = 64


@pytest.fixture(scope="module")
def setup():
    from tools.san.data import load_faces64
    from tools.san.export import make_stage
    from tools.san.model_io import PAPERS_MODEL, load_ensemble

    ensemble = load_ensemble(PAPERS_MODEL)
    train, test = load_faces64("train", limit=200), load_faces64("test", limit=60)
    stage = make_stage(ensemble, 0, "female", S, strength=1.0, change="residual")
    return ensemble, stage, train.images[train.gender == 0], test.images[test.gender == 0][:8]


def test_float_and_int8_match_torch(setup):
    from tools.san.stage import write_san_tflite
    from tools.san.tflite_check import compare_with_torch

    _, stage, calib, faces = setup
    exact = compare_with_torch(stage, write_san_tflite(stage, int8=False), faces)
    assert exact["max_abs"] < 1e-5
    blob = write_san_tflite(stage, int8=True, calib=calib)
    q = compare_with_torch(stage, blob, faces)
    assert q["max_abs"] < 0.06 and q["mean_abs"] < 0.01 and q["ssim"] > 0.99, q
    assert len(blob) < 64 * 1024


def test_no_calibration_and_other_strengths(setup):
    from tools.san.errors import SanModelError
    from tools.san.export import make_stage
    from tools.san.stage import write_san_tflite
    from tools.san.tflite_check import compare_with_torch

    ensemble, stage, calib, faces = setup
    with pytest.raises(SanModelError, match="calibration"):
        write_san_tflite(stage, True)
    off = make_stage(ensemble, 0, "female", S, strength=0.0)
    assert compare_with_torch(off, write_san_tflite(off, True, calib), faces)["max_abs"] < 1e-6   # identity
    half = make_stage(ensemble, 0, "female", S, strength=0.5)
    assert compare_with_torch(half, write_san_tflite(half, True, calib), faces)["max_abs"] < 0.05


def test_differential_stage_matches_torch(setup):
    """x + alpha (X_OP - X_SM): a second head constant and LOGISTIC; the stage is the ensemble's deployed output."""
    import numpy as np

    from tools.san.export import make_stage
    from tools.san.stage import write_san_tflite
    from tools.san.tflite_check import compare_with_torch, stage_outputs

    ensemble, _, calib, faces = setup
    stage = make_stage(ensemble, 0, "female", S, strength=2.5, change="differential")
    plain = write_san_tflite(stage, int8=False)
    assert compare_with_torch(stage, plain, faces)["max_abs"] < 1e-5
    want = ensemble.deployed(faces, np.zeros(len(faces), int), 0, strength=2.5, change="differential")
    got = np.clip(np.rint(stage_outputs(plain, faces) * 255), 0, 255)
    assert np.abs(got - want).max() <= 1                                     # rounding only
    q = compare_with_torch(stage, write_san_tflite(stage, int8=True, calib=calib), faces)
    assert q["max_abs"] < 0.06 and q["ssim"] > 0.99, q
