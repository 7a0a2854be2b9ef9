"""The operating-point choice: validation people only, the second-opinion reading under capture changes, the
targets (privacy, verification, SSIM), and the balanced verification pairs."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def _point(alpha: float, bacc: float, drop: float, ssim: float, colour: float = 2.0, peak: float = 4.0) -> dict:
    from tools.san.strength import meets_targets
    point = {"female": alpha, "male": alpha, "gender_bacc": bacc, "gender_acc_female": bacc, "gender_acc_male": bacc,
             "verif_acc": 0.95 - drop, "verif_drop": drop, "ssim": ssim, "colour_de": colour, "colour_peak": peak}
    return {**point, "meets_targets": meets_targets(point)}


def test_the_privacy_target_holds_on_both_sides_of_chance():
    from tools.san.strength import private_enough
    assert private_enough(0.5) and private_enough(0.6) and private_enough(0.4)
    assert not private_enough(0.61) and not private_enough(0.35)     # inverted: the gender is read back


def test_rule_takes_the_strongest_private_point_within_every_target():
    from tools.san.strength import choose_operating_point
    points = [_point(0.0, 0.95, 0.0, 1.0), _point(1.0, 0.58, 0.01, 0.95), _point(1.5, 0.52, 0.02, 0.93),
              _point(2.0, 0.50, 0.02, 0.85),            # at chance, but below the SSIM target
              _point(2.2, 0.50, 0.02, 0.95, colour=8.0),  # at chance, but recoloured (SSIM barely sees it)
              _point(2.3, 0.50, 0.02, 0.95, peak=12.0),   # at chance, but a band of strong change (mean colour fine)
              _point(2.5, 0.49, 0.05, 0.92)]            # at chance, but costs 5 verification points
    assert choose_operating_point(points)["female"] == 1.5
    # the strongest private-enough point, not the one that happens to read nearest 0.5: the reader is one
    # classifier and the extra strength is the margin for the others; an inverted reading (0.35) is no margin
    points = [_point(0.0, 0.95, 0.0, 1.0), _point(0.25, 0.50, 0.0, 0.99), _point(0.5, 0.53, 0.01, 0.96),
              _point(1.0, 0.56, 0.02, 0.91), _point(1.5, 0.35, 0.02, 0.90), _point(2.0, 0.50, 0.02, 0.85)]
    assert choose_operating_point(points)["female"] == 1.0
    # no point private enough: the one closest to chance among the useful ones
    points = [_point(0.0, 0.95, 0.0, 1.0), _point(1.0, 0.80, 0.01, 0.95), _point(2.0, 0.55, 0.10, 0.80)]
    assert choose_operating_point(points)["female"] == 1.0


def test_the_captured_reading_counts_when_it_is_worse():
    from tools.san.strength import choose_operating_point, worse_reading
    clean = [_point(0.0, 0.95, 0.0, 1.0), _point(1.0, 0.52, 0.01, 0.95), _point(1.5, 0.56, 0.02, 0.93)]
    captured = [_point(0.0, 0.90, 0.0, 1.0), _point(1.0, 0.75, 0.01, 0.95), _point(1.5, 0.57, 0.02, 0.93)]
    points = worse_reading(clean, captured)
    assert [p["gender_bacc"] for p in points] == [0.95, 0.75, 0.57]
    assert points[1]["clean_gender_bacc"] == 0.52 and points[1]["captured_gender_bacc"] == 0.75
    assert not points[1]["meets_targets"] and points[2]["meets_targets"]
    assert choose_operating_point(points)["female"] == 1.5      # 1.0 looks best on clean faces only


def test_validation_people_are_held_out_of_fit_and_test():
    from tools.san.data import load_faces64, validation_people
    fit, val, test = (load_faces64(s, align=False) for s in ("fit", "validation", "test"))
    assert not set(fit.identity) & set(val.identity)
    assert not set(val.identity) & set(test.identity) and not set(fit.identity) & set(test.identity)
    share = len(set(val.identity)) / (len(set(val.identity)) + len(set(fit.identity)))
    assert 0.15 < share < 0.25
    # the split is a pure function of the person: stable, and every image of a person on the same side
    ids = np.array(["a", "b", "a", "c", "b"])
    held = validation_people(np.arange(5), ids)
    assert held[0] == held[2] and held[1] == held[4]
    np.testing.assert_array_equal(held, validation_people(np.arange(5), ids))


def test_verification_pairs_are_balanced_and_valid():
    from tools.san.data import load_faces64
    from tools.san.strength import with_verification_pairs
    val = with_verification_pairs(load_faces64("validation", limit=150, align=False))
    same = val.identity[val.pair_idx[:, 0]] == val.identity[val.pair_idx[:, 1]]
    np.testing.assert_array_equal(same, val.pair_same)
    assert val.pair_same.sum() == (~val.pair_same).sum() > 20
    assert (val.pair_idx[:, 0] < val.pair_idx[:, 1]).all()


def test_choice_reads_only_validation_faces(monkeypatch):
    """choose_on_validation never loads the test people, and reports where it chose."""
    import tools.san.strength as strength
    from tools.san.data import load_faces64
    from tools.san.model_io import SanEnsemble
    from tools.san.nets import PrototypeAutoencoder

    loaded = []
    real = load_faces64

    def spy(split, *args, **kw):
        loaded.append(split)
        return real(split, *args, **kw)

    monkeypatch.setattr(strength, "load_faces64", spy)
    monkeypatch.setattr(strength, "opinion_reader", lambda *a, **k: lambda im: (im[..., 0].mean((1, 2)) < 100).astype(int))

    class _Evaluator:
        def embed(self, fs, images):
            v = images.reshape(len(images), -1).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    protos = np.random.default_rng(0).random((3, 3, 32, 32)).astype(np.float32)
    ensemble = SanEnsemble([PrototypeAutoencoder(3, dec=(8, 8)).eval()], protos, {"change": "label_free"})
    record = strength.choose_on_validation(ensemble, 0, "label_free", _Evaluator(), limit=60, log=lambda _: None)
    assert set(loaded) == {"validation"} and record["selection_split"] == "validation"
    assert record["choice"]["female"] == record["choice"]["male"] in strength.ALPHAS["label_free"]
    assert {"clean_gender_bacc", "captured_gender_bacc"} <= set(record["choice"])


def test_rank_auc_is_threshold_free():
    from tools.san.metrics import rank_auc

    truth = np.array([0, 0, 1, 1, -1])
    assert rank_auc(np.array([0.1, 0.2, 0.8, 0.9, 0.0]), truth) == 1.0
    assert rank_auc(np.array([0.9, 0.95, 0.97, 0.99, 0.0]), truth) == 1.0     # all read 'male': still ranked right
    assert rank_auc(np.array([0.6, 0.6, 0.6, 0.6, 0.0]), truth) == 0.5        # ties count half
    assert rank_auc(np.array([0.9, 0.8, 0.2, 0.1, 0.0]), truth) == 0.0
    assert np.isnan(rank_auc(np.array([0.1, 0.2]), np.array([0, 0])))
