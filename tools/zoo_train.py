"""Train a Fashion-MNIST zoo model (allconv32, resnet20, mobilenetv2) on frames padded to 32x32x3 (wall-time
bounded, one CPU thread by default) and export ONNX.

Usage: python -m tools.zoo_train [--model resnet20] --out out/models/resnet20.onnx [--minutes 12] [--limit N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edge.labels import labels_for
from tools.datasets import load_dataset


def fashion32(split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST padded to 32x32 and repeated over 3 channels: uint8 (N, 32, 32, 3) HWC, labels."""
    images, labels = load_dataset("fashion", split, limit=limit)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=3), labels


def train_allconv32(out: str | Path, minutes: float = 12.0, batch: int = 64, lr: float = 2e-3,
                    limit: int | None = None, seed: int = 0, log=print, name: str = "allconv32",
                    threads: int = 1) -> dict:
    """Adam with a cosine schedule over the wall-time budget; returns the test accuracy (first 2,000 frames).
    `name`: any of tools.models_zoo.FASHION32."""
    import torch
    import torch.nn.functional as F

    from tools.models_zoo import FASHION32, build
    from tools.train import export_onnx
    if name not in FASHION32:
        raise ValueError(f"{name!r} is not a Fashion-MNIST zoo model; choose one of: {', '.join(FASHION32)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = fashion32("train", limit)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(labels)
    model = build(name)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start, budget, seen = time.monotonic(), minutes * 60.0, 0
    model.train()
    while time.monotonic() - start < budget:
        order = torch.from_numpy(rng.permutation(len(x_all)))
        for i in range(0, len(x_all), batch):
            frac = min((time.monotonic() - start) / budget, 1.0)
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * frac))
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(x_all[idx].float() / 255.0), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            if (seen // batch) % 50 == 0:
                log(f"{seen} frames ({seen / len(x_all):.2f} epochs), loss {loss.item():.3f}, "
                    f"{time.monotonic() - start:.0f} s")
            if time.monotonic() - start >= budget:
                break
    model.eval()
    test, test_labels = fashion32("test", 2000)
    with torch.no_grad():
        pred = model(torch.from_numpy(test).permute(0, 3, 1, 2).float() / 255.0).argmax(1).numpy()
    acc = float(np.mean(pred == test_labels))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out, (3, 32, 32), meta={"dataset": "fashion", "labels": labels_for("fashion"),
                                                "train": {"model": name, "frames_seen": seen, "minutes": minutes,
                                                          "test_accuracy_2000": acc}})
    log(f"test accuracy (2,000 frames): {acc:.4f}; wrote {out}")
    return {"out": str(out), "accuracy": acc, "frames_seen": seen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="allconv32", help="allconv32, resnet20 or mobilenetv2")
    ap.add_argument("--out", default=None, help="default: out/models/MODEL.onnx")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args(argv)
    train_allconv32(a.out or f"out/models/{a.model}.onnx", a.minutes, limit=a.limit,
                    log=lambda m: print(m, flush=True, file=sys.stderr), name=a.model, threads=a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
