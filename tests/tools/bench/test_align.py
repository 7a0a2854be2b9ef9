"""`keycam bench align`: per-frame cost of face alignment in the simulated key stage, as JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from keycam.cli import cli
from tools.face.data import TRAIN_FILE


def _faces_folder(tmp_path, n: int = 30):
    """A folder holding a small file in the LFW layout: blurred noisy 64x64 crops, all in the train split."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (n, 16, 16, 3))
    images = np.clip(noise.repeat(4, axis=1).repeat(4, axis=2), 0, 255).astype(np.uint8)
    np.savez(tmp_path / TRAIN_FILE, images=images, split=np.zeros(n, int), identity=np.arange(n))
    return tmp_path


def test_bench_align_writes_each_step_and_the_key_stage_with_and_without(tmp_path):
    pytest.importorskip("dlib")
    out = tmp_path / "align.json"
    faces = str(_faces_folder(tmp_path))
    result = CliRunner().invoke(cli, ["bench", "align", "--faces", faces, "--limit", "26", "--profile", "stem",
                                      "--side", "64", "--side", "32", "--json", str(out)])
    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())["runs"]
    assert [(r["frames"], r["side"]) for r in runs] == [(6, 64), (6, 32)]
    for data in runs:
        for step in ("landmarks_ms", "fit_ms", "warp_ms", "key_stage_plain_ms", "key_stage_aligned_ms"):
            assert data[step] > 0, step
        assert data["key_stage_aligned_ms"] > data["key_stage_plain_ms"] + data["warp_ms"] / 2
    assert result.stdout.count("key stage, aligned") == 2


def test_resized_keeps_the_field_of_view():
    from tools.bench.align import resized
    crops = np.zeros((1, 8, 8, 3), np.uint8)
    crops[0, 2:6, 2:6] = 200                                  # a centred bright square
    big = resized(crops, 16)[0]
    assert big.shape == (16, 16, 3)
    np.testing.assert_array_equal(big[5:11, 5:11], 200)
    assert big[:3].max() == 0 and big[:, :3].max() == 0 and big[13:].max() == 0


def test_bench_align_without_faces_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "align", "--faces", str(tmp_path), "--json", str(tmp_path / "x")])
    assert result.exit_code == 1 and "LFW file not found" in result.output
