"""Train the LeNet-with-average-pool base model (PyTorch, host extra `train`) and export ONNX."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tools.datasets import load_dataset


def lenet(in_channels: int = 1, classes: int = 10, size: int = 28):
    """LeNet with average pooling, 3x3 'same' convs (the Key-Nets reference layout, 106k params at 28x28)."""
    import torch.nn as nn
    flat = 16 * (size // 4) ** 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes))


def export_onnx(model, path: str | Path, input_shape: tuple[int, ...], softmax: bool = True,
                meta: dict | None = None) -> None:
    """Export a sequential torch model (optionally with a final Softmax) to ONNX opset 13.

    `meta` (e.g. dataset and labels) is stored as JSON in the model's `keycam.*` metadata properties.
    """
    import onnx
    import torch
    import torch.nn as nn
    model = nn.Sequential(*model, nn.Softmax(dim=1)) if softmax else model
    model.eval()
    torch.onnx.export(model, torch.zeros((1,) + tuple(input_shape)), str(path), opset_version=13,
                      input_names=["image"], output_names=["probs"], dynamo=False)
    if meta:
        proto = onnx.load(str(path))
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = f"keycam.{key}", json.dumps(value)
        onnx.save(proto, str(path))


def evaluate(model, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    """Top-1 accuracy of a torch model on uint8 images."""
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch].astype(np.float32) / 255.0)[:, None]
            correct += int((model(x).argmax(1).numpy() == labels[i:i + batch]).sum())
    return correct / len(images)


def train_lenet(dataset: str, epochs: int = 4, batch: int = 128, lr: float = 2e-3, seed: int = 0,
                limit: int | None = None, data_dir: str | None = None, progress: bool = True, threads: int = 1):
    """Train LeNet on an IDX dataset; returns (model, test accuracy).

    One thread by default: for a net this small, extra threads mostly add contention.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_train, y_train = load_dataset(dataset, "train", data_dir, limit)
    x_test, y_test = load_dataset(dataset, "test", data_dir)
    model = lenet()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (-(-len(x_train) // batch)))
    xt = torch.from_numpy(x_train.astype(np.float32) / 255.0)[:, None]
    yt = torch.from_numpy(y_train)
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xt)))
        bar = tqdm(range(0, len(xt), batch), desc=f"{dataset} epoch {epoch + 1}/{epochs}", disable=not progress)
        for i in bar:
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model, evaluate(model, x_test, y_test)
