"""`keycam keys provision --model X.onnx [--calibration PATH]` keys a graph model (the shipped narrow ResNet-20,
trained on Fashion-MNIST padded to 32x32x3) and says which calibration frames it used; calibration sources and
their errors."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from base.errors import ConfigError
from keycam.cli import cli
from keys.records import source_digest
from tools.bench.zoo import SHIPPED_DIR
from tools.keying.calibration import calibration_for
from tools.onnx_import import load_onnx

PASS = "graph-provision-pass"
RESNET20 = SHIPPED_DIR / "resnet20.onnx"


def keycam(*args: str, vault):
    return CliRunner().invoke(cli, list(args), env={"KEYCAM_VAULT": str(vault), "KEYCAM_VAULT_PASSPHRASE": PASS})


@pytest.fixture(scope="module")
def resnet():
    return RESNET20


@pytest.mark.slow
def test_provision_a_graph_model_with_and_without_calibration(tmp_path, resnet):
    frames = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)   # calibration only
    np.savez(tmp_path / "calib.npz", frames=frames)
    vault = tmp_path / "vault.kcv"
    assert keycam("keys", "init", vault=vault).exit_code == 0
    res = keycam("keys", "provision", "cam-1", "--model", str(resnet), "--profile", "stem", "--no-faceplate",
                 "--canary-frames", "4", "--calibration", str(tmp_path / "calib.npz"), vault=vault)
    assert res.exit_code == 0, res.output
    assert f"calibrated int8 on 40 frames from {tmp_path / 'calib.npz'}" in res.output
    res = keycam("keys", "provision", "cam-2", "--model", str(resnet), "--profile", "stem", "--no-faceplate",
                 "--canary-frames", "4", vault=vault)
    assert res.exit_code == 0, res.output
    assert "fashion training split (the model's dataset metadata)" in res.output


def test_calibration_sources_and_errors(tmp_path, resnet):
    from PIL import Image

    net = load_onnx(resnet)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    calib = calibration_for(net, folder)
    assert calib.frames.shape == (3, 3 * 32 * 32) and "3 frames from" in calib.source
    assert np.allclose(calib.frames[2], 80 / 255.0)
    digest = source_digest(folder)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "1.png")
    assert source_digest(folder) != digest
    padded = calibration_for(net).frames                       # 28x28 Fashion-MNIST, padded to 32x32x3
    assert padded.shape[1] == 3 * 32 * 32 and np.all(padded.reshape(-1, 3, 32, 32)[:, :, :2] == 0)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "big.png")
    with pytest.raises(ConfigError, match="mixed sizes|model takes 32x32"):
        calibration_for(net, folder)
    np.savez(tmp_path / "bad.npz", frames=np.full((2, 32, 32, 3), 3.0))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        calibration_for(net, tmp_path / "bad.npz")
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(ConfigError, match="folder of images or an .npz"):
        calibration_for(net, tmp_path / "x.txt")
