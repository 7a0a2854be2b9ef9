"""Face verification protocol, LFW loaders (read in place from the research data folder, README: Data) and a tiny training run."""
from __future__ import annotations

import numpy as np
import pytest

from tools.face import data as face_data
from tools.face.verify import cosine_scores, decisions, tmr_at_fmr, verification_metrics


def test_perfectly_separated_scores_give_full_accuracy_and_tmr():
    same = np.array([True] * 50 + [False] * 50)
    scores = np.where(same, 0.9, 0.1) + np.linspace(0, 0.05, 100)
    m = verification_metrics(scores, same, np.tile([1, 2], 50))
    assert m["accuracy"] == 1.0 and m["tmr_at_fmr0.01"] == 1.0 and m["pairs"] == 100


def test_uninformative_scores_are_at_chance():
    rng = np.random.default_rng(0)
    same = rng.random(4000) < 0.5
    m = verification_metrics(rng.random(4000), same, rng.integers(1, 3, 4000))
    assert 0.44 < m["accuracy"] < 0.56 and m["tmr_at_fmr0.01"] < 0.05


def test_tmr_at_fmr_allows_exactly_the_budgeted_false_matches():
    impostor = np.arange(100) / 100.0                  # 0.00 .. 0.99
    genuine = np.array([0.985, 0.975, 0.5])
    scores = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(3, bool), np.zeros(100, bool)])
    # FMR 1e-2 allows 1 impostor above the threshold: t = 0.98, so 0.985 matches, 0.975 does not
    assert tmr_at_fmr(scores, same, 1e-2) == pytest.approx(1 / 3)


def test_thresholds_come_from_the_other_fold():
    same = np.array([True, False, True, False])
    scores = np.array([0.9, 0.2, 0.4, 0.3])          # fold 2 alone would need t <= 0.4
    m = verification_metrics(scores, same, np.array([1, 1, 2, 2]))
    assert m["fold_accuracy"][1] < 1.0                  # fold 1's threshold (0.9) misses the 0.4 pair
    assert decisions(scores, np.array([1, 1, 2, 2]), m["thresholds"]).dtype == bool


def test_cosine_scores_ignore_scale():
    emb = np.array([[1.0, 0.0], [5.0, 0.0], [0.0, 2.0]])
    assert np.allclose(cosine_scores(emb, np.array([[0, 1], [0, 2]])), [1.0, 0.0])


@pytest.fixture(scope="module")
def lfw_available():
    root = face_data.faces_dir()
    if not (root / face_data.PAIRS_FILE).is_file():
        pytest.skip(f"LFW arrays not found in {root} (the project's ../shared/data/faces)")
    return root


def test_lfw_loaders_give_identity_disjoint_train_and_view2_folds(lfw_available):
    images, labels = face_data.train_faces()
    assert images.shape[1:] == (64, 64, 3) and labels.min() == 0 and len(images) == 3925
    pairs = face_data.view2_pairs()
    assert pairs.images.shape[1:] == (112, 112, 3) and len(pairs.same) == 1200
    assert set(np.unique(pairs.fold)) == {1, 2} and pairs.same.sum() == 600
    plain = face_data.to_chw_float(pairs.images[:2])
    assert plain.shape == (2, 3 * 112 * 112) and plain.max() <= 1.0


def test_missing_lfw_folder_is_a_clear_error(tmp_path):
    from base.errors import ConfigError
    with pytest.raises(ConfigError, match="LFW file not found"):
        face_data.view2_pairs(tmp_path)


def test_tiny_face_training_exports_a_keyable_embedder(lfw_available, tmp_path):
    from tools.face.train import train_face112
    from tools.keying.keyed import derive_keyset, key_network, verify_keyed
    from tools.onnx_import import load_onnx
    out = tmp_path / "face.onnx"
    res = train_face112(out, minutes=0.02, batch=16, limit=64, tiny=True, log=lambda m: None)
    net = load_onnx(out)
    assert res["epochs"] >= 1 and net.input_shape == (3, 32, 32) and net.output_size == 16
    ks = derive_keyset(bytes(32), "d", "m", net, "stem-patch", output_encryption=True)
    x = np.random.default_rng(0).uniform(size=(3, 3 * 32 * 32))
    assert verify_keyed(net, key_network(net, ks), ks, x) < 1e-9


def test_balanced_subset_keeps_both_kinds_of_pair_in_every_fold():
    pairs = face_data.Pairs(np.zeros((4, 2, 2, 3), np.uint8), np.zeros((12, 2), np.int64),
                            np.array([1, 1, 1, 0, 0, 0] * 2, bool), np.repeat([1, 2], 6))
    sub = face_data.balanced_subset(pairs, 8)
    assert len(sub.same) == 8 and sub.same.sum() == 4
    assert all(set(sub.same[sub.fold == f]) == {True, False} for f in (1, 2))
