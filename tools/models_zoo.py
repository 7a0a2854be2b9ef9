"""Base models beyond LeNet, as PyTorch nets the ONNX importer and keying accept.

- allconv32: the 11-layer all-convolutional net of Springenberg et al. (All-CNN-C, the Key-Nets
  paper's CIFAR-10 net): 9 convolutions, global average pooling and softmax, 32x32x3 input.
- face112: a compact face-embedding CNN for 112x112x3 crops. Its stem is a 4x4/stride-4 "patchify"
  convolution: receptive fields tile the frame, so under a patch-aligned sensor key (profile
  stem-patch) the keyed stem is a GATHER plus a 1x1 convolution, both int8 in TFLite.
- resnet20: the CIFAR ResNet-20 (3 stages of 3 basic blocks, identity shortcuts and 1x1 projection
  shortcuts where the stage halves the size), narrow (widths 8-16-32 by default) for CPU training.
- mobilenetv2: a MobileNetV2-style net (inverted residuals: 1x1 expand, 3x3 depthwise, 1x1 project,
  ReLU6, residual adds where shapes match), narrow, for 32x32x3 input.
"""
from __future__ import annotations

from pathlib import Path

ZOO = ("allconv32", "face112", "resnet20", "mobilenetv2")
FASHION32 = ("allconv32", "resnet20", "mobilenetv2")        # trained on Fashion-MNIST padded to 32x32x3
FACE_EMBEDDING = 256


def _conv_bn_relu(nn, cin: int, cout: int, kernel: int = 3, stride: int = 1, bn: bool = True) -> list:
    layers = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2 if kernel > stride else 0)]
    return layers + ([nn.BatchNorm2d(cout)] if bn else []) + [nn.ReLU()]


def allconv32(in_channels: int = 3, classes: int = 10, width: int = 96, bn: bool = True):
    """All-CNN-C: 96-96-96/2-192-192-192/2-192-192(1x1)-classes(1x1), global average pool (1.37M params)."""
    import torch.nn as nn
    w1, w2 = width, 2 * width
    layers = (_conv_bn_relu(nn, in_channels, w1, bn=bn) + _conv_bn_relu(nn, w1, w1, bn=bn)
              + _conv_bn_relu(nn, w1, w1, stride=2, bn=bn) + _conv_bn_relu(nn, w1, w2, bn=bn)
              + _conv_bn_relu(nn, w2, w2, bn=bn) + _conv_bn_relu(nn, w2, w2, stride=2, bn=bn)
              + _conv_bn_relu(nn, w2, w2, bn=bn) + _conv_bn_relu(nn, w2, w2, kernel=1, bn=bn)
              + [nn.Conv2d(w2, classes, 1), nn.AvgPool2d(8), nn.Flatten()])
    return nn.Sequential(*layers)


def face112(embedding: int = FACE_EMBEDDING, stem: int = 12, width: int = 32, size: int = 112):
    """Compact face embedder: 4x4/4 patchify stem, three 3x3 stages (28, 14, 7 px), flatten + linear.

    The flatten + linear head keeps the spatial layout of the aligned face (as ArcFace's output
    layer does). 1.9M parameters at the defaults, ~33M multiply-adds per 112x112 frame.
    """
    import torch.nn as nn
    if size % 16:
        raise ValueError("face112 needs an input size divisible by 16")
    w1, w2, w3 = width, 2 * width, 4 * width
    layers = (_conv_bn_relu(nn, 3, stem, kernel=4, stride=4) + _conv_bn_relu(nn, stem, w1)
              + _conv_bn_relu(nn, w1, w1) + _conv_bn_relu(nn, w1, w2, stride=2) + _conv_bn_relu(nn, w2, w2)
              + _conv_bn_relu(nn, w2, w3, stride=2) + _conv_bn_relu(nn, w3, w3)
              + [nn.Flatten(), nn.Dropout(0.2), nn.Linear(w3 * (size // 16) ** 2, embedding)])
    return nn.Sequential(*layers)


def resnet20(classes: int = 10, widths: tuple[int, int, int] = (8, 16, 32), blocks: int = 3):
    """CIFAR ResNet (He et al. 2016, 6n+2 layers; n = `blocks`): 3x3 stem, 3 stages of basic blocks (the
    first block of stages 2 and 3 strides 2 with a 1x1 projection shortcut), global average pool, linear."""
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = nn.Identity() if stride == 1 and cin == cout else \
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers, cin = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()], widths[0]
    for stage, cout in enumerate(widths):
        for b in range(blocks):
            layers.append(Block(cin, cout, 2 if stage > 0 and b == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def mobilenetv2(classes: int = 10, stem: int = 16,
                settings: tuple = ((1, 8, 1, 1), (4, 16, 2, 2), (4, 24, 2, 2), (4, 32, 2, 1)), last: int = 128):
    """MobileNetV2-style (Sandler et al. 2018): 3x3 stem, inverted residual blocks (t, c, n, s) = expansion,
    channels, repeats, first stride; ReLU6 after expand and depthwise, linear bottleneck, residual add where
    stride 1 and channels match; 1x1 conv to `last`, global average pool, linear."""
    import torch.nn as nn

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, t: int):
            super().__init__()
            hidden = cin * t
            layers = [] if t == 1 else [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
            layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body, self.residual = nn.Sequential(*layers), stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    layers, cin = [nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6()], stem
    for t, c, n, s in settings:
        for i in range(n):
            layers.append(Inverted(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(last, classes)]
    return nn.Sequential(*layers)


def build(name: str, tiny: bool = False):
    """A zoo model by name (tiny: narrow variant with the same layer structure, for tests)."""
    if name == "allconv32":
        return allconv32(width=8) if tiny else allconv32()
    if name == "face112":
        return face112(embedding=16, stem=16, width=4, size=32) if tiny else face112()
    if name == "resnet20":
        return resnet20(widths=(4, 8, 8), blocks=1) if tiny else resnet20()
    if name == "mobilenetv2":
        return mobilenetv2(stem=8, settings=((1, 4, 1, 1), (2, 8, 2, 2)), last=16) if tiny else mobilenetv2()
    raise ValueError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}")


def input_shape(name: str, tiny: bool = False) -> tuple[int, int, int]:
    """(C, H, W) input of a zoo model."""
    return (3, 112, 112) if name == "face112" and not tiny else (3, 32, 32)


def export_random(name: str, path: str | Path, seed: int = 0, tiny: bool = False, meta: dict | None = None) -> Path:
    """Export a randomly initialised zoo model to ONNX (enough for keying cost and timing)."""
    import torch

    from tools.train import export_onnx
    torch.manual_seed(seed)
    model = build(name, tiny)
    export_onnx(model, path, input_shape(name, tiny), softmax=name in FASHION32, meta=meta)
    return Path(path)
