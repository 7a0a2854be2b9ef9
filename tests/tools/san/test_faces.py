"""SAN on a slice of the real LFW data (lfw_dfunneled_64_rgb.npz and lfw_dfunneled_112_rgb_pairs.npz in the
research data folder, README: Data): prototypes, balanced sampling, a tiny two-member training run,
the weights file round trip and the full-size perturbation."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny_ensemble(tmp_path_factory):
    import torch

    from tools.san.model_io import load_ensemble, save_ensemble
    from tools.san.train import COMMITTED_SAN, TrainConfig, train_ensemble

    torch.set_num_threads(1)
    config = TrainConfig(members=2, matcher_epochs=1, gender_epochs=1, limit=160,
                         san=replace(COMMITTED_SAN, pretrain_epochs=1, epochs=1, max_steps_per_epoch=2))
    ensemble = train_ensemble(config, log=lambda _: None)
    path = tmp_path_factory.mktemp("san") / "tiny.pt"
    save_ensemble(ensemble, path)
    return ensemble, load_ensemble(path)


def test_prototypes_and_balanced_epochs():
    from tools.san.data import balanced_epoch, downsample, load_faces64, prototypes, to_float
    from tools.san.errors import FaceDataError

    faces = load_faces64("train", limit=300)
    x = to_float(faces.images)
    protos = prototypes(x, faces.gender)
    assert protos.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(protos[1], x[faces.gender == 1].mean(0), atol=1e-6)
    np.testing.assert_allclose(protos[2], (protos[0] + protos[1]) / 2, atol=1e-6)
    assert downsample(x[:2], 2).shape == (2, 3, 32, 32)

    epoch = balanced_epoch(faces.gender, np.random.default_rng(0))
    counts = np.bincount(faces.gender[epoch], minlength=2)
    assert counts[0] == counts[1] == max(np.bincount(faces.gender))
    assert set(np.flatnonzero(faces.gender == 1)) == set(epoch[faces.gender[epoch] == 1])  # majority: each once
    with pytest.raises(FaceDataError, match="both labels"):
        balanced_epoch(np.ones(5, dtype=np.int64), np.random.default_rng(0))
    with pytest.raises(FaceDataError, match="not found"):
        load_faces64("test", faces_dir=__import__("pathlib").Path("/nonexistent"))


def test_test_split_is_identity_disjoint():
    from tools.san.data import load_faces64, load_pairs112

    train, test, pairs = load_faces64("train"), load_faces64("test"), load_pairs112(limit=50)
    assert len(train) == 3925 and len(test) == 946
    assert test.pair_idx.max() < len(test) and len(test.pair_idx) == len(test.pair_same)
    assert pairs.images.shape[1:] == (112, 112, 3)


def test_weights_round_trip_and_perturbation(tiny_ensemble):
    from tools.san.data import load_faces64, load_pairs112
    from tools.san.errors import SanModelError

    trained, loaded = tiny_ensemble
    assert len(loaded.members) == 2 and loaded.work_size == 32
    assert loaded.meta["members"][1]["augmentations"] == ["flip", "color"]
    faces = load_faces64("test", limit=6)
    for member in (0, 1):
        a, b = trained.perturb(faces.images, faces.gender, member), loaded.perturb(faces.images, faces.gender, member)
        np.testing.assert_array_equal(a[1], b[1])
    sm, op = loaded.perturb(faces.images, faces.gender, 0)
    assert sm.shape == op.shape == faces.images.shape and op.dtype == np.uint8
    assert np.any(sm != op)
    big = load_pairs112(limit=3)
    assert loaded.perturb(big.images, big.gender, 1)[1].shape == big.images.shape
    with pytest.raises(SanModelError, match="member 5"):
        loaded.perturb(faces.images, faces.gender, 5)
    with pytest.raises(SanModelError, match="smaller than"):
        loaded.perturb(faces.images[:, :16, :16], faces.gender, 0)
    with pytest.raises(SanModelError, match="gender labels"):
        loaded.perturb(faces.images, faces.gender[:2], 0)


def test_bad_model_files(tmp_path):
    from tools.san.errors import SanModelError
    from tools.san.model_io import load_ensemble

    with pytest.raises(SanModelError, match="not found"):
        load_ensemble(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(SanModelError, match="not a readable"):
        load_ensemble(junk)


def test_metrics():
    from tools.san.metrics import all_pairs, gender_scores, psnr, ssim, tmr_at_fmr, verification_accuracy

    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 32)
    img = np.broadcast_to((ramp[:, None] + ramp[None, :])[None, :, :, None] / 2, (3, 32, 32, 3)).astype(np.uint8)
    np.testing.assert_allclose(ssim(img, img), 1.0)
    noisy = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    assert (ssim(img, noisy) < 0.5).all() and (psnr(img, noisy) < 30).all()
    scores = gender_scores(np.array([1, 1, 1, 1, 0, -1]), np.array([1, 1, 1, 0, 0, -1]))
    assert scores["acc"] == pytest.approx(0.8) and scores["bacc"] == pytest.approx(0.75)
    assert scores["acc_female"] == pytest.approx(0.5)
    pairs, genuine = all_pairs(np.array([0, 0, 1, 1, 2]))
    assert len(pairs) == 10 and genuine.sum() == 2
    dist = np.where(genuine, 0.2, 0.9)
    assert tmr_at_fmr(dist, genuine, 1e-2) == 1.0
    assert verification_accuracy(dist, genuine, 0.6) == 1.0
    assert verification_accuracy(dist, genuine, 0.1) == pytest.approx(0.8)


def test_cli_errors(tmp_path):
    from click.testing import CliRunner

    from keycam.cli import cli

    result = CliRunner().invoke(cli, ["san", "eval", "--model", str(tmp_path / "none.pt"), "--json",
                                      str(tmp_path / "r.json")])
    assert result.exit_code != 0 and "keycam san train" in result.output
    result = CliRunner().invoke(cli, ["san", "train", "--members", "9", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code != 0 and "members must be" in result.output
    result = CliRunner().invoke(cli, ["san", "train", "--w-feature", "3", "--ssim-floor", "0.9", "--out",
                                      str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and "--ssim-floor, --w-feature: label-free training only" in result.output
    assert not (tmp_path / "m.pt").exists()


def test_onnx_stage_matches_perturb(tiny_ensemble, tmp_path):
    import torch

    from tools.san.data import load_faces64
    from tools.san.errors import SanModelError
    from tools.san.export import export_onnx, make_stage

    _, ensemble = tiny_ensemble
    faces = load_faces64("test", limit=12)
    male = faces.gender == 1
    stage = make_stage(ensemble, 1, "male", 64)
    export_onnx(stage, tmp_path / "stage.onnx")
    x = torch.from_numpy(faces.images[male].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    with torch.no_grad():
        staged = np.rint(stage(x).numpy().transpose(0, 2, 3, 1) * 255)
    want = ensemble.perturb(faces.images[male], faces.gender[male], 1)[1]
    assert np.abs(staged - want).max() <= 1
    ort = pytest.importorskip("onnxruntime")
    got = ort.InferenceSession(str(tmp_path / "stage.onnx")).run(None, {"face": x[:1].numpy()})[0]
    np.testing.assert_allclose(got, stage(x[:1]).detach().numpy(), atol=1e-4)
    with pytest.raises(SanModelError, match="multiple"):
        make_stage(ensemble, 0, "female", 112)


def test_mean_adversary_option():
    from base.errors import ConfigError
    from tools.san.train import COMMITTED_SAN, MeanLogits, TrainConfig, train_ensemble

    with pytest.raises(ConfigError, match="adversary must be one of"):
        TrainConfig(adversary="max")
    config = TrainConfig(members=2, matcher_epochs=1, gender_epochs=1, limit=120, adversary="mean",
                         san=replace(COMMITTED_SAN, pretrain_epochs=0, epochs=1, max_steps_per_epoch=1))
    ensemble = train_ensemble(config, log=lambda _: None)
    assert len(ensemble.members) == 2 and ensemble.meta["train_config"]["adversary"] == "mean"
    import torch
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    torch.testing.assert_close(MeanLogits([a, b])(x), (a(x) + b(x)) / 2)
