"""`keycam bench necessity`: the Key-Nets paper's necessity argument, measured on MNIST / Fashion-MNIST.

A degradation net D and a classifier C are trained jointly; D is penalised by the SSIM between the
plain frame and both D(x) and an adversarial reconstructor's R(D(x)) (R trains alongside to undo D).
Sweeping the penalty weight traces accuracy vs intelligibility; after training, a fresh attacker
decoder is trained on D's outputs and its SSIM is what the plot shows. The keyed model's point sits
next to it: its accuracy at the SSIM the attacks reach (ciphertext-only: learned inversion with
another key; model + frames: the structure attack).
"""
from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np

from base.cli import json_option
from tools.bench.common import Progress, print_table, write_json
from tools.bench.keyed import SHIPPED_MODELS
from tools.datasets import load_dataset

DEFAULT_WEIGHTS = (0.0, 1.0, 4.0)


def _torch():
    import torch
    torch.set_num_threads(1)
    return torch


def ssim_torch(a, b, sigma: float = 1.5, size: int = 11):
    """Differentiable mean SSIM per frame of (B, 1, H, W) tensors in [0, 1] (Gaussian window)."""
    torch = _torch()
    from torch.nn import functional as F
    x = torch.arange(size, dtype=a.dtype) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    win = g[None, None]
    blur = lambda t: F.conv2d(F.pad(t, (size // 2,) * 4, mode="reflect"), win)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3))


def _nets():
    from torch import nn
    degrader = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 1, 5, padding=2), nn.Sigmoid())
    classifier = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                               nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                               nn.Linear(32 * 7 * 7, 10))
    return degrader, classifier


def _decoder():
    from torch import nn
    return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.Conv2d(32, 1, 5, padding=2), nn.Sigmoid())


def _batches(n: int, batch: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield rng.integers(0, n, batch)


def train_tradeoff(x, y, weight: float, steps: int, seed: int = 0):
    """Jointly train D, C (and the adversary R) for one penalty weight; returns (D, C)."""
    torch = _torch()
    from torch.nn import functional as F
    torch.manual_seed(seed)
    degrader, classifier = _nets()
    adversary = _decoder()
    opt = torch.optim.Adam(list(degrader.parameters()) + list(classifier.parameters()), lr=2e-3)
    opt_r = torch.optim.Adam(adversary.parameters(), lr=2e-3)
    for idx in _batches(len(x), 64, steps, seed):
        xb, yb = x[idx], y[idx]
        d = degrader(xb)
        opt_r.zero_grad()
        F.mse_loss(adversary(d.detach()), xb).backward()
        opt_r.step()
        opt.zero_grad()
        loss = F.cross_entropy(classifier(d), yb)
        if weight > 0:
            loss = loss + weight * (ssim_torch(d, xb).mean() + ssim_torch(adversary(d), xb).mean())
        loss.backward()
        opt.step()
    return degrader, classifier


def attacker_ssim(degrader, x_train, x_test, steps: int) -> tuple[float, float]:
    """SSIM of D(x) itself and of a fresh decoder trained on (D(x), x) pairs, on test frames."""
    torch = _torch()
    from torch.nn import functional as F
    with torch.no_grad():
        d_train, d_test = degrader(x_train), degrader(x_test)
    dec = _decoder()
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    for idx in _batches(len(x_train), 64, steps, 1):
        opt.zero_grad()
        F.mse_loss(dec(d_train[idx]), x_train[idx]).backward()
        opt.step()
    with torch.no_grad():
        return float(ssim_torch(d_test, x_test).mean()), float(ssim_torch(dec(d_test), x_test).mean())


def run_necessity(dataset: str, weights: tuple[float, ...], steps: int, train_limit: int, test_limit: int,
                  keyed_point: bool = True) -> dict:
    """The accuracy-vs-SSIM curve of learned degradation, and the keyed model's point."""
    torch = _torch()
    tr, ytr = load_dataset(dataset, "train", limit=train_limit)
    te, yte = load_dataset(dataset, "test", limit=test_limit)
    x_train = torch.tensor(tr[:, None] / 255.0, dtype=torch.float32)
    x_test = torch.tensor(te[:, None] / 255.0, dtype=torch.float32)
    y_train = torch.tensor(ytr, dtype=torch.long)
    curve, show = [], Progress("necessity", dataset)
    for w in weights:
        show.step(f"penalty weight {w}: training degrader + classifier, then its attacker ({steps} steps each)")
        degrader, classifier = train_tradeoff(x_train, y_train, w, steps)
        with torch.no_grad():
            acc = float((classifier(degrader(x_test)).argmax(1).numpy() == yte).mean())
        ssim_d, ssim_attack = attacker_ssim(degrader, x_train, x_test, steps)
        curve.append({"weight": w, "accuracy": acc, "ssim_degraded": ssim_d, "ssim_attacker": ssim_attack})
    result = {"dataset": dataset, "steps": steps, "train_frames": len(tr), "test_frames": len(te), "curve": curve}
    if keyed_point:
        show.step("keyed model point (default profile): keying, inversion and structure attacks")
        result["keyed"] = keyed_model_point(dataset, test_limit)
    return result


def keyed_model_point(dataset: str, limit: int) -> dict:
    """The default keyed profile: int8 accuracy and the SSIM its attacks reach."""
    from tools.attacks.inversion import run_inversion
    from tools.attacks.reuse import deployed_accuracies
    from tools.attacks.structure import run_structure
    from tools.attacks.suite import default_profile
    from tools.attacks.target import build_target
    profile = default_profile()
    target = build_target(dataset, profile, limit=limit, train_limit=2000)
    return {"profile": profile, "accuracy": deployed_accuracies(target)["acc_keyed_int8"],
            "ssim_ciphertext_only": run_inversion(target, pairs=2000, steps=300)[0]["other_key"]["ssim"],
            "ssim_structure_attack": run_structure(target)[0]["ssim"]}


def plot(results: list[dict], path: str | Path) -> Path:
    """Accuracy vs attacker SSIM: one curve per dataset, keyed-model points as markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, r in enumerate(results):
        color = f"C{i}"
        pts = sorted(r["curve"], key=lambda c: c["ssim_attacker"])
        ax.plot([c["ssim_attacker"] for c in pts], [c["accuracy"] for c in pts], "o-", color=color,
                label=f"{r['dataset']}: learned degradation")
        if "keyed" in r:
            k = r["keyed"]
            ax.plot(k["ssim_ciphertext_only"], k["accuracy"], "*", ms=14, color=color,
                    label=f"{r['dataset']}: keyed ({k['profile']}), ciphertext-only")
            ax.plot(k["ssim_structure_attack"], k["accuracy"], "X", ms=10, color=color,
                    label=f"{r['dataset']}: keyed ({k['profile']}), structure attack")
    ax.set_xlabel("SSIM of the best attacker reconstruction (lower = more private)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Necessity baseline: learned degradation vs keyed model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


@click.command()
@click.option("--dataset", "datasets", type=click.Choice(sorted(SHIPPED_MODELS)), multiple=True,
              help="Dataset(s) (repeatable; default both).")
@click.option("--weights", default=",".join(map(str, DEFAULT_WEIGHTS)), show_default=True,
              help="Comma-separated SSIM penalty weights.")
@click.option("--steps", type=click.IntRange(10), default=200, show_default=True, help="Training steps per weight.")
@click.option("--train-limit", type=click.IntRange(100), default=3000, show_default=True)
@click.option("--limit", type=click.IntRange(10), default=1000, show_default=True, help="Test frames.")
@json_option("json_path")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), default=None, help="Write the plot as PNG.")
@click.option("--no-keyed", is_flag=True, help="Skip the keyed model's point (faster).")
def necessity(datasets, weights, steps, train_limit, limit, json_path, png_path, no_keyed) -> None:
    """Learned degradation (SSIM-penalised, adversarial) vs the keyed model: accuracy vs SSIM.

    \b
    Example:
      keycam bench necessity --dataset mnist --steps 50 --json necessity.json --png necessity.png
    """
    try:
        ws = tuple(float(w) for w in weights.split(",") if w.strip())
    except ValueError as exc:
        raise click.BadParameter(f"weights must be numbers: {weights!r}") from exc
    if not ws or min(ws) < 0:
        raise click.BadParameter("give at least one non-negative weight")
    results = [run_necessity(d, ws, steps, train_limit, limit, not no_keyed) for d in (datasets or ("mnist", "fashion"))]
    for r in results:
        rows = [(f"weight {c['weight']:g}", f"accuracy {c['accuracy']:.4f}   SSIM degraded {c['ssim_degraded']:.3f}   "
                                           f"SSIM attacker {c['ssim_attacker']:.3f}") for c in r["curve"]]
        if "keyed" in r:
            k = r["keyed"]
            rows.append((f"keyed ({k['profile']})", f"accuracy {k['accuracy']:.4f}   SSIM ciphertext-only attack "
                                                    f"{k['ssim_ciphertext_only']:.3f}   structure attack "
                                                    f"{k['ssim_structure_attack']:.3f}"))
        print_table(rows, f"keycam bench necessity: {r['dataset']}")
    if png_path:
        click.echo(f"wrote {plot(results, png_path)}")
    write_json(json_path, {"results": results, "png": os.fspath(png_path) if png_path else None})
