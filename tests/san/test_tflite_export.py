"""The SAN stage as TFLite (committed weights, real LFW faces): float and int8 against torch, the
permutation-keyed variant against the unkeyed one, the edge preprocess stage running it, and the CLI."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch
S = 64


def _perm_key(seed: int):
    from keys.factors import Key, Permutation

    return Key(3 * S * S, [Permutation(np.random.default_rng(seed).permutation(3 * S * S))], "sensor")


@pytest.fixture(scope="module")
def setup():
    from tools.san.data import load_faces64
    from tools.san.export import make_stage
    from tools.san.model_io import load_ensemble

    ensemble = load_ensemble()
    train, test = load_faces64("train", limit=200), load_faces64("test", limit=60)
    stage = make_stage(ensemble, 0, "female", S, strength=1.0)
    return ensemble, stage, train.images[train.gender == 0], test.images[test.gender == 0][:8]


def test_float_and_int8_match_torch(setup):
    from tools.san.tflite_check import compare_with_torch
    from tools.san.tflite_export import write_san_tflite

    _, stage, calib, faces = setup
    exact = compare_with_torch(stage, write_san_tflite(stage, int8=False), faces)
    assert exact["max_abs"] < 1e-5
    blob = write_san_tflite(stage, int8=True, calib=calib)
    q = compare_with_torch(stage, blob, faces)
    assert q["max_abs"] < 0.06 and q["mean_abs"] < 0.01 and q["ssim"] > 0.99, q
    assert len(blob) < 64 * 1024


def test_keyed_stage_equals_unkeyed_up_to_the_keys(setup):
    from edge.pipeline import PreprocessStage
    from edge.runtime import TFLiteModel
    from tools.san.tflite_check import compare_keyed, compare_with_torch, key_frame
    from tools.san.tflite_export import write_san_tflite

    _, stage, calib, faces = setup
    k_in, k_out = _perm_key(1), _perm_key(2)
    plain = write_san_tflite(stage, False)
    assert compare_keyed(plain, write_san_tflite(stage, False, None, k_in, k_out, secret=bytes(32)),
                         k_in, k_out, faces) < 1e-5
    keyed = write_san_tflite(stage, True, calib, k_in, k_out, secret=bytes(32))
    assert keyed == write_san_tflite(stage, True, calib, k_in, k_out, secret=bytes(32))     # deterministic
    q = compare_with_torch(stage, keyed, faces, k_in, k_out)
    assert q["max_abs"] < 0.08 and q["mean_abs"] < 0.01 and q["ssim"] > 0.99, q
    model = TFLiteModel(keyed)
    assert model.metadata["input_key_fingerprint"] == k_in.fingerprint
    assert model.metadata["output_key_fingerprint"] == k_out.fingerprint
    # the edge preprocess stage runs it: keyed face in, face keyed with the output key out (uint8)
    got = PreprocessStage(model, "san.tflite")(key_frame(k_in, faces[0])).reshape(S, S, 3).astype(int)
    want = key_frame(k_out, np.clip(np.rint(TFLiteModel(plain).invoke(faces[0]) * 255), 0, 255)
                     .astype(np.uint8).reshape(S, S, 3)).astype(int)
    assert np.abs(got - want).max() <= 0.08 * 255 and np.abs(got - want).mean() < 2.5
    # a keyed frame read as a plain face gives something else than the face's X_OP
    assert np.abs(TFLiteModel(plain).invoke(key_frame(k_in, faces[0])) - TFLiteModel(plain).invoke(faces[0])).mean() > 0.05


def test_hidden_channel_keys_fold_into_the_weights(setup):
    import torch
    import torch.nn.functional as F

    from tools.san.channel_keys import derive_channel_keys, key_member

    ensemble, stage, _, faces = setup
    member = ensemble.members[0]
    keys = derive_channel_keys(bytes(32), "t", member)
    keyed = key_member(member, keys)
    assert not torch.allclose(keyed.dec1.weight, member.dec1.weight)
    x = F.avg_pool2d(torch.from_numpy(faces.transpose(0, 3, 1, 2).astype(np.float32) / 255), 2)
    same = stage.same.expand(len(x), -1, -1, -1)
    with torch.no_grad():
        plain_h, keyed_h = member.features(x, same), keyed.features(x, same)
        k = keys["dec2"]
        np.testing.assert_allclose(keyed_h, torch.from_numpy(k.gain[None, :, None, None]).float() * plain_h[:, k.perm],
                                   atol=1e-4)
        np.testing.assert_allclose(keyed(x, same, same)[1], member(x, same, same)[1], atol=1e-5)
    assert derive_channel_keys(bytes(32), "t", member)["enc2"].perm.tolist() == keys["enc2"].perm.tolist()


def test_bad_keys_and_zero_strength(setup):
    from keys.factors import Gain, Key, Permutation
    from tools.san.errors import SanModelError
    from tools.san.export import make_stage
    from tools.san.tflite_check import compare_with_torch
    from tools.san.tflite_export import write_san_tflite

    ensemble, stage, calib, faces = setup
    n = 3 * S * S
    gained = Key(n, [Permutation(np.arange(n)), Gain(np.full(n, 0.5))])
    with pytest.raises(SanModelError, match="not a pixel permutation"):
        write_san_tflite(stage, False, None, gained, _perm_key(2))
    with pytest.raises(SanModelError, match="acts on 12"):
        write_san_tflite(stage, False, None, Key(12, [Permutation(np.arange(12))]), _perm_key(2))
    with pytest.raises(SanModelError, match="both the input key and the output key"):
        write_san_tflite(stage, False, None, _perm_key(1))
    with pytest.raises(SanModelError, match="calibration"):
        write_san_tflite(stage, True)
    off = make_stage(ensemble, 0, "female", S, strength=0.0)
    assert compare_with_torch(off, write_san_tflite(off, True, calib), faces)["max_abs"] < 1e-6   # identity
    half = make_stage(ensemble, 0, "female", S, strength=0.5)
    assert compare_with_torch(half, write_san_tflite(half, True, calib), faces)["max_abs"] < 0.05


def test_cli_export_tflite_keyed(tmp_path):
    from click.testing import CliRunner

    from edge.cli import cli
    from edge.runtime import TFLiteModel

    (tmp_path / "in.key").write_bytes(_perm_key(3).to_bytes())
    (tmp_path / "out.key").write_bytes(_perm_key(4).to_bytes())
    args = ["san", "export", "--gender", "male", "--tflite", str(tmp_path / "san.tflite"), "--in-key",
            str(tmp_path / "in.key"), "--out-key", str(tmp_path / "out.key"), "--calib", "32", "--check", "4",
            "--strength", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "keyed stage (float) == output key applied to the unkeyed stage" in result.output
    assert TFLiteModel(tmp_path / "san.tflite").metadata["gender"] == "male"
    result = CliRunner().invoke(cli, ["san", "export", "--gender", "male", "--tflite", str(tmp_path / "x.tflite"),
                                      "--in-key", str(tmp_path / "in.key")])
    assert result.exit_code != 0 and "needs both --in-key and --out-key" in result.output
    result = CliRunner().invoke(cli, ["san", "export", "--gender", "male"])
    assert result.exit_code != 0 and "nothing to write" in result.output
