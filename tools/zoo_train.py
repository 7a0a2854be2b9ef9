"""Train allconv32 on Fashion-MNIST padded to 32x32x3 (wall-time bounded, one CPU thread) and export ONNX.

Usage: python -m tools.zoo_train --out out/models/allconv32.onnx [--minutes 12] [--limit N]
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
                    limit: int | None = None, seed: int = 0, log=print) -> dict:
    """Adam with a cosine schedule over the wall-time budget; returns the test accuracy (first 2,000 frames)."""
    import torch
    import torch.nn.functional as F

    from tools.models_zoo import allconv32
    from tools.train import export_onnx
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = fashion32("train", limit)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(labels)
    model = allconv32()
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
                                                "train": {"frames_seen": seen, "minutes": minutes}})
    log(f"test accuracy (2,000 frames): {acc:.4f}; wrote {out}")
    return {"out": str(out), "accuracy": acc, "frames_seen": seen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/models/allconv32.onnx")
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args(argv)
    train_allconv32(a.out, a.minutes, limit=a.limit, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
