"""Train the face112 embedder on the LFW train people (normalised softmax, optional CosFace margin), export ONNX.

Usage: python -m tools.face.train --out out/models/face112.onnx [--minutes 20]
Training is bounded by wall time; one CPU thread (the machine is shared).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tools.face.data import train_faces

SIZE = 112


def upsample(images: np.ndarray, size: int = SIZE, batch: int = 256) -> np.ndarray:
    """uint8 (N, h, w, 3) -> uint8 (N, 3, size, size), bilinear."""
    import torch
    import torch.nn.functional as F
    out = np.empty((len(images), 3, size, size), dtype=np.uint8)
    for a in range(0, len(images), batch):
        x = torch.from_numpy(images[a:a + batch]).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out[a:a + batch] = y.round().clamp(0, 255).byte().numpy()
    return out


def augment(x, rng: np.random.Generator, shift: int = 8):
    """Random horizontal flip and a random shift of up to `shift` pixels (zero fill), per batch item."""
    import torch
    flip = torch.from_numpy(rng.random(len(x)) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    dy, dx = rng.integers(0, 2 * shift + 1, 2)
    return pad[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def train_face112(out: str | Path, minutes: float = 20.0, batch: int = 64, lr: float = 0.05, seed: int = 0,
                  scale: float = 16.0, margin: float = 0.0, limit: int | None = None, tiny: bool = False,
                  optimizer: str = "sgd", log=print) -> dict:
    """Train with a CosFace head until `minutes` of wall time, export the embedder to `out`."""
    import torch
    import torch.nn.functional as F

    from tools.models_zoo import build, input_shape
    from tools.train import export_onnx
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = train_faces(limit=limit)
    size = input_shape("face112", tiny)[1]
    x_all = torch.from_numpy(upsample(images, size))
    y_all = torch.from_numpy(labels)
    classes = int(labels.max()) + 1
    model = build("face112", tiny)
    emb = model[-1].out_features
    head = torch.nn.Parameter(torch.randn(classes, emb) * 0.01)
    params = list(model.parameters()) + [head]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True) if optimizer == "sgd" \
        else torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    steps_per_epoch = -(-len(x_all) // batch)
    start, step, epoch, budget = time.monotonic(), 0, 0, minutes * 60.0
    history = []
    while time.monotonic() - start < budget:
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_all)))
        total, correct, seen = 0.0, 0, 0
        for i in range(0, len(x_all), batch):
            frac = min((time.monotonic() - start) / budget, 1.0)
            for group in opt.param_groups:          # cosine schedule over the wall-time budget
                group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * frac))
            idx = order[i:i + batch]
            xb = augment(x_all[idx].float() / 255.0, rng)
            e = F.normalize(model(xb), dim=1)
            cos = e @ F.normalize(head, dim=1).T
            onehot = F.one_hot(y_all[idx], classes).float()
            loss = F.cross_entropy(scale * (cos - margin * onehot), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((cos.argmax(1) == y_all[idx]).sum())
            seen += len(idx)
            step += 1
            if time.monotonic() - start >= budget:
                break
        epoch += 1
        history.append({"epoch": epoch, "loss": total / max(seen, 1), "train_acc": correct / max(seen, 1)})
        log(f"epoch {epoch}: loss {history[-1]['loss']:.3f}, train top-1 {history[-1]['train_acc']:.3f}, "
            f"{step} steps ({step / steps_per_epoch:.1f} epochs) in {time.monotonic() - start:.0f} s")
    model.eval()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": "lfw", "task": "face-embedding", "embedding": emb, "labels": [],
            "train": {"people": classes, "images": len(x_all), "epochs": epoch, "minutes": minutes}}
    export_onnx(model, out, (3, size, size), softmax=False, meta=meta)
    return {"out": str(out), "epochs": epoch, "history": history}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/models/face112.onnx")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    a = ap.parse_args(argv)
    train_face112(a.out, a.minutes, a.batch, a.lr, limit=a.limit, optimizer=a.optimizer,
                  log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
