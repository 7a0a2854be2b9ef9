"""Perturbation strength on a slice of the real LFW data: per-gender strengths in perturb, the sweep/grid
recombination and the operating-point rule (stand-in evaluators: the unseen models are not in CI)."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch


class _Gender:
    """Stand-in classifier: 'male' iff the red channel is darker than the image's mean (deterministic)."""

    def predict(self, images):
        return (images[..., 0].mean((1, 2)) < images.mean((1, 2, 3))).astype(np.int64)


class _Evaluator:
    gender = _Gender()

    def embed(self, fs, images):
        k = images.shape[1] // 8                                       # 8x8 block means, any crop size
        small = images.reshape(len(images), 8, k, 8, k, 3).mean((2, 4)).reshape(len(images), -1)
        return (small / np.linalg.norm(small, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def ensemble():
    import torch

    from tools.san.data import downsample, load_faces64, prototypes, to_float
    from tools.san.model_io import SanEnsemble
    from tools.san.nets import PrototypeAutoencoder

    torch.manual_seed(0)
    faces = load_faces64("train", limit=80)
    x = downsample(to_float(faces.images), 2)
    return SanEnsemble([PrototypeAutoencoder(3, dec=(8, 8)).eval()], prototypes(x, faces.gender), {})


def test_strength_scales_the_change(ensemble):
    from tools.san.data import load_faces64
    from tools.san.errors import SanModelError

    faces = load_faces64("test", limit=40)
    _, full = ensemble.perturb(faces.images, faces.gender, 0, strength=1.0)
    _, none = ensemble.perturb(faces.images, faces.gender, 0, strength=0.0)
    _, half = ensemble.perturb(faces.images, faces.gender, 0, strength=0.5)
    np.testing.assert_array_equal(none, faces.images)
    d_full = np.abs(full.astype(int) - faces.images).mean()
    assert 0 < np.abs(half.astype(int) - faces.images).mean() < d_full
    female = faces.gender == 0
    assert female.any() and (~female).any()
    _, mixed = ensemble.perturb(faces.images, faces.gender, 0, strength={"female": 1.0, "male": 0.0})
    np.testing.assert_array_equal(mixed[female], full[female])
    np.testing.assert_array_equal(mixed[~female], faces.images[~female])
    assert ensemble.strength == {"female": 1.0, "male": 1.0, "unknown": 1.0}
    with pytest.raises(SanModelError, match="in \\[0, 4\\]"):
        ensemble.perturb(faces.images, faces.gender, 0, strength={"female": 4.5, "male": 0.0})
    with pytest.raises(SanModelError, match="in \\[0, 4\\]"):
        ensemble.perturb(faces.images, faces.gender, 0, strength=-0.1)
    with pytest.raises(SanModelError, match="must map female and male"):
        ensemble.perturb(faces.images, faces.gender, 0, strength={"woman": 1.0})


def test_sweep_grid_and_rule(ensemble):
    from tools.san.data import load_faces64
    from tools.san.strength import (
        choose_operating_point,
        pareto_front,
        strength_grid,
        sweep,
    )

    faces = load_faces64("test", limit=120)
    out = sweep(ensemble, 0, faces, _Evaluator(), "residual", alphas=(0.0, 0.5, 1.0), log=lambda _: None)
    assert out.gender_pred.shape == (3, len(faces)) and out.emb.shape[:2] == (3, len(faces))
    np.testing.assert_allclose(out.ssim[0], 1.0)
    np.testing.assert_allclose(out.colour[0], 0.0)
    np.testing.assert_allclose(out.colour_peak[0], 0.0)
    assert (out.colour[2] > out.colour[1]).mean() > 0.9          # a stronger change moves the colours further
    assert (out.colour_peak[1:] >= out.colour[1:]).all()         # a high percentile is at least the mean
    points = strength_grid(out, faces)
    assert len(points) == 9
    zero = next(p for p in points if p["female"] == 0 and p["male"] == 0)
    assert zero["verif_drop"] == 0 and zero["ssim"] == pytest.approx(1.0)
    # a recombined point equals running the mixed strength directly
    mixed = next(p for p in points if p["female"] == 1.0 and p["male"] == 0.0)
    _, x = ensemble.perturb(faces.images, faces.gender, 0, strength={"female": 1.0, "male": 0.0})
    from tools.san.metrics import gender_scores
    assert mixed["gender_bacc"] == pytest.approx(gender_scores(_Gender().predict(x), faces.gender)["bacc"])
    for per_gender in (False, True):
        chosen = choose_operating_point(points, per_gender)
        candidates = [p for p in points if per_gender or p["female"] == p["male"]]
        pool = [p for p in candidates if p["meets_targets"]] or [p for p in candidates if p["verif_drop"] <= 0.03]
        assert abs(chosen["gender_bacc"] - 0.5) == min(abs(p["gender_bacc"] - 0.5) for p in pool)
        assert per_gender or chosen["female"] == chosen["male"]
    front = pareto_front(points)
    assert front and all(not (abs(q["gender_bacc"] - 0.5) < abs(p["gender_bacc"] - 0.5)
                              and q["verif_acc"] > p["verif_acc"]) for p in front for q in points)
    with pytest.raises(ValueError, match="alpha 0"):
        sweep(ensemble, 0, faces, _Evaluator(), alphas=(0.5, 1.0))


def test_rule_prefers_chance_over_an_inverted_classifier():
    from tools.san.strength import choose_operating_point, meets_targets

    def point(bacc, verif, alpha):
        p = {"gender_bacc": bacc, "verif_acc": verif, "verif_drop": 0.9 - verif, "female": alpha, "male": alpha,
             "ssim": 0.95, "colour_de": 1.0, "colour_peak": 2.0}
        return {**p, "meets_targets": meets_targets(p)}

    points = [point(0.30, 0.89, 3.0), point(0.52, 0.88, 2.0), point(0.58, 0.895, 1.5), point(0.9, 0.9, 0.0)]
    assert choose_operating_point(points)["gender_bacc"] == 0.52     # 0.30 is further from chance: inverted
    uneven = {**point(0.50, 0.89, 1.0), "male": 3.0}
    assert choose_operating_point(points + [uneven])["gender_bacc"] == 0.52          # equal strengths only
    assert choose_operating_point(points + [uneven], per_gender=True) is uneven


def test_differential_change(ensemble):
    """x + alpha (X_OP - X_SM): the stored form is used by `deployed`, the reconstruction error cancels, an
    unknown gender gets no change, and the sweep runs it."""
    import torch
    import torch.nn.functional as F

    from tools.san.data import load_faces64, to_float, to_uint8
    from tools.san.errors import SanModelError
    from tools.san.model_io import SanEnsemble
    from tools.san.semi_adversarial import perturb
    from tools.san.strength import sweep

    faces = load_faces64("test", limit=30)
    full = torch.from_numpy(to_float(faces.images))
    small = F.interpolate(full, size=(32, 32), mode="area")
    sm, op = perturb(ensemble.members[0], ensemble.prototypes, small.numpy(), faces.gender)
    up = F.interpolate(torch.from_numpy(op - sm), size=(64, 64), mode="bilinear", align_corners=False)
    want = to_uint8((full + 2.0 * up).clamp(0, 1).numpy())
    got = ensemble.deployed(faces.images, faces.gender, 0, strength=2.0, change="differential")
    np.testing.assert_array_equal(got, want)
    residual = ensemble.deployed(faces.images, faces.gender, 0, strength=2.0, change="residual")
    assert not np.array_equal(got, residual)
    stored = SanEnsemble(ensemble.members, ensemble.prototypes, {"change": "differential",
                                                                 "strength": {"female": 2.0, "male": 2.0}})
    np.testing.assert_array_equal(stored.deployed(faces.images, faces.gender, 0), want)
    assert ensemble.change == "residual"                                   # models without the field
    unknown = np.full(len(faces), -1)
    np.testing.assert_array_equal(stored.deployed(faces.images, unknown, 0), faces.images)
    with pytest.raises(SanModelError, match="change must be one of"):
        ensemble.deployed(faces.images, faces.gender, 0, change="additive")
    out = sweep(ensemble, 0, faces, _Evaluator(), alphas=(0.0, 2.0), log=lambda _: None)
    np.testing.assert_array_equal(out.gender_pred[1], _Gender().predict(want))


def test_cross_fold_chooses_on_one_fold_and_reports_on_the_other(ensemble):
    """Folds are identity-disjoint; each row's strength is the rule's choice on the selecting fold alone, and
    its numbers are those of the other fold's people."""
    from tools.san.data import load_faces64, load_pairs112
    from tools.san.evaluate import cross_fold
    from tools.san.strength import choose_operating_point, strength_grid, sweep

    fs64, fs112 = load_faces64("test", limit=200), load_pairs112(limit=200)
    for fs in (fs64, fs112):
        assert set(np.unique(fs.fold)) <= {-1, 1, 2}
        ones, twos = set(fs.identity[fs.fold == 1]), set(fs.identity[fs.fold == 2])
        assert ones and twos and not ones & twos
        sub = fs.subset(fs.fold == 2)
        assert len(sub) == (fs.fold == 2).sum() and (sub.fold == 2).all()
        assert len(sub.pair_idx) and sub.pair_idx.max() < len(sub)
    out = sweep(ensemble, 0, fs64, _Evaluator(), "differential", alphas=(0.0, 1.0, 2.0), log=lambda _: None)
    rows = cross_fold(ensemble, 0, "differential", False, out, {"lfw64_test": fs64, "lfw112_pairs": fs112},
                      _Evaluator(), log=lambda _: None)
    assert [(r["selected_on_fold"], r["reported_on_fold"]) for r in rows] == [(1, 2), (2, 1)]
    for row in rows:
        pick = fs64.fold == row["selected_on_fold"]
        chosen = choose_operating_point(strength_grid(out.subset(pick), fs64.subset(pick)))
        assert (row["female"], row["male"]) == (chosen["female"], chosen["male"])
        other = fs64.fold == row["reported_on_fold"]
        assert row["n_images_64"] == other.sum()
        want = next(p for p in strength_grid(out.subset(other), fs64.subset(other))
                    if (p["female"], p["male"]) == (row["female"], row["male"]))
        assert row["gender_bacc"] == want["gender_bacc"]
        assert row["n_pairs_112"] == len(fs112.subset(fs112.fold == row["reported_on_fold"]).pair_idx)
