"""A torch ResNet-18 (random weights, 64x64 input, exported with torch.onnx) keys exactly in float under
`stem` and runs as int8 TFLite in the real interpreter."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from edge.runtime import TFLiteModel
from hardware.preadc import adc
from tests.kits.onnx import SECRET
from tools.ir import Add, MaxPool, forward
from tools.keying.keyed import derive_keyset, key_network, verify_keyed
from tools.onnx_import import load_onnx
from tools.tflite.writer import write_tflite

torch = pytest.importorskip("torch")
nn = torch.nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential() if stride == 1 and cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


def resnet18(classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 layout: 7x7/2 stem, 3x3/2 max pool, 4 stages of 2 basic blocks, GAP, FC."""
    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


@pytest.mark.slow
def test_resnet18_keys_exactly_under_stem_and_runs_int8(tmp_path):
    torch.manual_seed(0)
    model = resnet18().eval()
    with torch.no_grad():                     # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    net = load_onnx(path)
    assert sum(isinstance(layer, Add) for layer in net.layers) == 8
    assert any(isinstance(layer, MaxPool) for layer in net.layers)
    x = np.random.default_rng(0).uniform(size=(24, 3 * 64 * 64))
    with torch.no_grad():
        want = model(torch.from_numpy(x[:2].reshape(2, 3, 64, 64)).float()).numpy()
    assert np.max(np.abs(forward(net, x[:2]) - want)) < 1e-3 * np.max(np.abs(want))
    ks = derive_keyset(SECRET, "d", "m", net, "stem")
    keyed = key_network(net, ks)
    assert verify_keyed(net, keyed, ks, x[:2]) < 1e-9
    frames = adc(ks.sensor.apply(x)) / 255.0
    blob, report = write_tflite(keyed, int8=True, calib=frames[:16])
    got = TFLiteModel(blob).predict((frames[16:] * 255).round().astype(np.uint8))
    ref = forward(keyed, frames[16:])
    assert np.max(np.abs(got - ref)) < 0.15 * np.max(np.abs(ref))
    ops = {r["op"] for r in report if r["dtype"] == "int8"}
    assert {"ADD", "MAX_POOL_2D", "CONV_2D", "MEAN"} <= ops
