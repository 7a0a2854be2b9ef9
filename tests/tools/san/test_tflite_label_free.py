"""The label-free SAN stage (change label_free: the neutral prototype in the encoder and the head, one stage for
every face, no gender input), the committed label-free model at strength ALPHA: torch stage ==
SanEnsemble.deployed for faces of both genders, unkeyed float / int8 and keyed float32 / int8 TFLite against
torch, the edge preprocess stage, the gender refusals of make_stage and `keycam san export`."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytestmark = pytest.mark.torch
S = 64
N = 3 * S * S
ALPHA = 0.8


def _perm_key(seed: int):
    from keys.factors import Key, Permutation

    return Key(N, [Permutation(np.random.default_rng(seed).permutation(N))], "sensor")


def _both(faces, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n faces of each gender, alternating female / male, and their labels."""
    from tools.san.tflite_check import alternating_genders

    order = alternating_genders(faces.gender)[:2 * n]
    assert np.all(np.bincount(faces.gender[order]) == n)
    return faces.images[order], faces.gender[order]


def _torch_out(stage, faces: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = stage(torch.from_numpy(faces.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)).numpy()
    return out.transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def setup():
    """(the papers' gendered ensemble, the label-free model, its stage, calibration faces of both genders,
    held-out faces of both genders with their labels)."""
    from tools.san.data import load_faces64
    from tools.san.export import make_stage
    from tools.san.model_io import PAPERS_MODEL, load_ensemble

    ensemble, free = load_ensemble(PAPERS_MODEL), load_ensemble()
    assert free.label_free and not ensemble.label_free
    free = replace(free, meta={**free.meta, "strength": {"female": ALPHA, "male": ALPHA, "unknown": ALPHA}})
    calib, _ = _both(load_faces64("train", limit=300), 64)
    faces, gender = _both(load_faces64("test", limit=60), 4)
    return ensemble, free, make_stage(free, 0, None, S), calib, faces, gender


def test_stage_is_the_deployed_output_for_every_face(setup):
    from tools.san.export import LABEL_FREE_NOTE, NEUTRAL

    _, free, stage, _, faces, gender = setup
    assert stage.label_free and stage.gender is None and stage.strength == ALPHA and stage.faces == LABEL_FREE_NOTE
    for buffer in (stage.same, stage.opposite):                      # no gendered prototype anywhere in the stage
        np.testing.assert_array_equal(buffer[0].numpy(), free.prototypes[NEUTRAL])
    got = np.rint(_torch_out(stage, faces) * 255)
    want = free.deployed(faces, None, 0)
    assert np.abs(got - want).max() <= 1                             # rounding only
    for labels in (gender, 1 - gender):                              # deployed ignores a gender for this form
        np.testing.assert_array_equal(free.deployed(faces, labels, 0), want)
    assert np.abs(want.astype(int) - faces).mean() > 2               # the stage changes the faces


def test_gender_refusals(setup):
    from tools.san.errors import SanModelError
    from tools.san.export import SanStage, make_stage

    ensemble, free, _, _, _, _ = setup
    with pytest.raises(SanModelError, match="one stage for every face: it takes no gender"):
        make_stage(free, 0, "female", S)
    with pytest.raises(SanModelError, match="takes no gender"):
        make_stage(ensemble, 0, "male", S, change="label_free")
    for change in ("differential", "residual"):
        with pytest.raises(SanModelError, match=f"the {change} change builds one stage per source gender"):
            make_stage(free if change == "residual" else ensemble, 0, None, S, change=change)
    with pytest.raises(SanModelError, match="a label_free stage takes no gender"):
        SanStage(free.members[0], free.prototypes, 1, S, change="label_free")
    with pytest.raises(SanModelError, match="gender 0 .female. or 1 .male., got None"):
        SanStage(free.members[0], free.prototypes, None, S, change="differential")


def test_label_free_stage_faces_alternate_genders():
    """Calibration and check faces of the label-free stage: both genders, alternating, the larger group's rest last."""
    from tools.san.tflite_check import alternating_genders

    np.testing.assert_array_equal(alternating_genders(np.array([1, 1, 0, 1, 0, 1, 1])), [2, 0, 4, 1, 3, 5, 6])
    assert len(alternating_genders(np.array([1, 1]))) == 2


def test_unkeyed_float_and_int8_match_torch(setup):
    from edge.runtime import TFLiteModel
    from tools.san.export import LABEL_FREE_NOTE
    from tools.san.stage import write_san_tflite
    from tools.san.tflite_check import compare_with_torch

    _, _, stage, calib, faces, _ = setup
    assert compare_with_torch(stage, write_san_tflite(stage, int8=False), faces)["max_abs"] < 1e-5
    blob = write_san_tflite(stage, int8=True, calib=calib)
    q = compare_with_torch(stage, blob, faces)
    assert q["max_abs"] < 0.06 and q["mean_abs"] < 0.01 and q["ssim"] > 0.99, q
    meta = TFLiteModel(blob).metadata
    assert meta["change"] == "label_free" and meta["label_free"] is True and meta["gender"] is None
    assert meta["faces"] == LABEL_FREE_NOTE
    assert "LOGISTIC" not in [r["op"] for r in meta["ops"]]          # the head's linear output is the change


def test_keyed_stages_and_the_edge_preprocess_stage(setup):
    """float32 keyed == K(plain float), int8 keyed ~ torch and K(plain int8) on a permutation key; the device's
    preprocess stage takes the int8 one unchanged and returns the deployed output of faces of both genders."""
    from edge.pipeline import PreprocessStage
    from edge.runtime import TFLiteModel
    from tools.san.key_checks import clear_key_findings
    from tools.san.stage import write_keyed_san_tflite, write_san_tflite
    from tools.san.tflite_check import compare_keyed, compare_with_torch, key_frame, unkey_frame

    _, free, stage, calib, faces, _ = setup
    key = _perm_key(11)
    plain = write_san_tflite(stage, int8=False)
    keyed = write_keyed_san_tflite(stage, key, secret=bytes(32))
    assert compare_keyed(plain, keyed, key, key, faces[:4]) < 1e-5
    keyed8 = write_keyed_san_tflite(stage, key, {"member": 0}, secret=bytes(32), int8=True, calib_faces=calib)
    q = compare_with_torch(stage, keyed8, faces, key, key)
    assert q["max_abs"] < 0.07 and q["mean_abs"] < 0.008 and q["ssim"] > 0.99, q
    assert compare_keyed(write_san_tflite(stage, True, calib), keyed8, key, key, faces) < 0.08
    assert clear_key_findings(keyed8, key, S) == []
    model = TFLiteModel(keyed8)
    assert model.metadata["label_free"] is True and model.metadata["output_key_fingerprint"] == key.fingerprint
    pre = PreprocessStage(model, "san_label_free.tflite")
    pre.check_feeds(TFLiteModel(plain), key.fingerprint)            # feeds a 64x64x3 face model keyed with K
    got = np.stack([unkey_frame(key, pre(key_frame(key, f)).reshape(S, S, 3).astype(np.float64)) for f in faces])
    want = free.deployed(faces, None, 0).astype(np.float64)
    assert np.abs(got - want).max() <= 0.07 * 255 and np.abs(got - want).mean() < 2.5


def test_cli_export_label_free(setup, tmp_path):
    from click.testing import CliRunner

    from edge.runtime import TFLiteModel
    from keycam.cli import cli
    from tools.san.export import LABEL_FREE_NOTE
    from tools.san.model_io import save_ensemble

    _, free, _, _, _, _ = setup
    save_ensemble(free, tmp_path / "free.pt")
    (tmp_path / "k.key").write_bytes(_perm_key(3).to_bytes())
    args = ["san", "export", "--model", str(tmp_path / "free.pt"), "--tflite", str(tmp_path / "san.tflite"),
            "--key", str(tmp_path / "k.key"), "--check", "4", "--calib", "24", "--out", str(tmp_path / "san.onnx")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert LABEL_FREE_NOTE in result.output and "held-out faces of both genders" in result.output
    assert "no run of the key's permutation" in result.output and "onnxruntime matches torch" in result.output
    meta = TFLiteModel(tmp_path / "san.tflite").metadata
    assert meta["label_free"] is True and meta["gender"] is None and meta["strength"] == ALPHA
    assert meta["faces"] == LABEL_FREE_NOTE and meta["dtype"] == "int8"
    result = CliRunner().invoke(cli, args + ["--gender", "male"])
    assert result.exit_code != 0 and "takes no gender" in result.output, result.output
    from tools.san.model_io import PAPERS_MODEL
    result = CliRunner().invoke(cli, ["san", "export", "--model", str(PAPERS_MODEL), "--out", str(tmp_path / "g.onnx")])
    assert result.exit_code != 0 and "one stage per source gender" in result.output, result.output
    assert not (tmp_path / "g.onnx").exists()
