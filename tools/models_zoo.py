"""Base models beyond LeNet, as strictly sequential PyTorch nets the ONNX importer and keying accept.

- allconv32: the 11-layer all-convolutional net of Springenberg et al. (All-CNN-C, the Key-Nets
  paper's CIFAR-10 net): 9 convolutions, global average pooling and softmax, 32x32x3 input.
- face112: a compact face-embedding CNN for 112x112x3 crops. Its stem is a 4x4/stride-4 "patchify"
  convolution: receptive fields tile the frame, so under a patch-aligned sensor key (profile
  stem-patch) the keyed stem is a GATHER plus a 1x1 convolution, both int8 in TFLite.
"""
from __future__ import annotations

from pathlib import Path

ZOO = ("allconv32", "face112")
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


def build(name: str, tiny: bool = False):
    """A zoo model by name (tiny: narrow variant with the same layer structure, for tests)."""
    if name == "allconv32":
        return allconv32(width=8) if tiny else allconv32()
    if name == "face112":
        return face112(embedding=16, stem=16, width=4, size=32) if tiny else face112()
    raise ValueError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}")


def input_shape(name: str, tiny: bool = False) -> tuple[int, int, int]:
    """(C, H, W) input of a zoo model."""
    return (3, 32, 32) if name == "allconv32" or tiny else (3, 112, 112)


def export_random(name: str, path: str | Path, seed: int = 0, tiny: bool = False, meta: dict | None = None) -> Path:
    """Export a randomly initialised zoo model to ONNX (enough for keying cost and timing)."""
    import torch

    from tools.train import export_onnx
    torch.manual_seed(seed)
    model = build(name, tiny)
    export_onnx(model, path, input_shape(name, tiny), softmax=name == "allconv32", meta=meta)
    return Path(path)
