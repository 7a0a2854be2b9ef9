"""The content-hash disk memo (tools/san/memo.py), the memoised auxiliary networks built on it, and the descriptor probe."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def test_memoised_computes_once_and_writes_whole_files(tmp_path):
    from tools.san.memo import array_digest, digest, memoised

    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(6).reshape(2, 3)

    a = np.zeros((2, 3), np.uint8)
    assert array_digest(a) == digest(a.tobytes(), b"(2, 3)") != array_digest(a.reshape(3, 2))
    name = f"x-{array_digest(a)}.npy"
    first, second = memoised(tmp_path, name, compute), memoised(tmp_path, name, compute)
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1 and [p.name for p in tmp_path.iterdir()] == [name]
    memoised(None, name, compute)
    assert len(calls) == 2

    def broken_save(value, file) -> None:
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        memoised(tmp_path / "sub", name, compute, save=broken_save)
    assert list((tmp_path / "sub").iterdir()) == []       # neither a partial memo nor a temporary file


def test_gender_cnn_is_trained_once_per_recipe(tmp_path):
    from tools.san.aux_models import gender_cnn, predict

    rng = np.random.default_rng(0)
    images, labels = rng.random((16, 3, 32, 32), dtype=np.float32), np.tile([0, 1], 8)
    kwargs = {"epochs": 1, "seed": 3, "augmentations": ("flip",), "desc": "t", "cache_dir": tmp_path}
    trained = predict(gender_cnn(images, labels, **kwargs), images)
    assert len(list(tmp_path.iterdir())) == 1
    np.testing.assert_array_equal(predict(gender_cnn(images, labels, **kwargs), images), trained)
    assert len(list(tmp_path.iterdir())) == 1
    gender_cnn(images, labels, **{**kwargs, "seed": 4})    # another recipe: another network
    assert len(list(tmp_path.iterdir())) == 2
    gender_cnn(images, 1 - labels, **kwargs)                # other labels: another network
    assert len(list(tmp_path.iterdir())) == 3


def test_a_trained_network_depends_on_its_seed_not_on_what_ran_before(tmp_path):
    import torch

    from tools.san.aux_models import gender_cnn, predict

    rng = np.random.default_rng(0)
    images, labels = rng.random((16, 3, 32, 32), dtype=np.float32), np.tile([0, 1], 8)
    kwargs = {"epochs": 1, "seed": 3, "augmentations": ("flip",), "desc": "t"}
    first = predict(gender_cnn(images, labels, **kwargs, cache_dir=tmp_path / "a"), images)
    torch.randn(1000)                  # e.g. another network trained, or a memo hit where a first run trained
    np.testing.assert_array_equal(predict(gender_cnn(images, labels, **kwargs, cache_dir=tmp_path / "b"), images), first)


def test_linear_probe_reads_a_linear_label_balanced():
    from tools.san.aux_models import linear_probe
    from tools.san.metrics import gender_scores

    rng = np.random.default_rng(0)
    labels = (rng.random(600) < 0.2).astype(int)          # 1 in 5: a probe that ignored the balance would say 0
    features = rng.normal(size=(600, 16)).astype(np.float32)
    features[:, 3] += 1.5 * (2 * labels - 1)
    probe = linear_probe(features[:400], labels[:400])
    assert gender_scores(probe(features[400:]), labels[400:])["bacc"] > 0.85
    shuffled = linear_probe(features[:400], rng.permutation(labels[:400]))
    assert gender_scores(shuffled(features[400:]), labels[400:])["bacc"] < 0.65
