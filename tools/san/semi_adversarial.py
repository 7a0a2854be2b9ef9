"""The general semi-adversarial trainer: keep classifier A's view of an image, confound classifier B.

A prototype autoencoder G gets an image x with its binary attribute y (the one classifier B predicts).
Stage 1 pretrains G as a plain autoencoder (pixel loss on both outputs). Stage 2 minimises

    w_confound * [CE(B(X_SM), y) + CE(B(X_OP), 1 - y)]          # B is confounded on X_OP, steered on X_SM
  + w_pixel * d(x, X_SM) + w_pixel_op * d(x, X_OP)             # stay close (d = L1 or MSE)
  + w_keep * (||A(X_SM) - A(x)||^2 + ||A(X_OP) - A(x)||^2) / 2  # A's output (features or logits) is kept

with A and B frozen: neither is trained against G (semi-adversarial, not a GAN). The SAN is the case
A = face matcher, B = gender classifier; any other attribute pair works the same way (see tests/tools/san).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from base.errors import ConfigError
from tools.san.augment import augment, check_names
from tools.san.aux_models import batches
from tools.san.data import balanced_epoch
from tools.san.nets import PrototypeAutoencoder

PIXEL_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def check_training(name: str, config, epochs: tuple[int, ...], lrs: tuple[float, ...]) -> None:
    """The checks every SAN trainer's config shares: epochs >= 0, batch_size >= 1, learning rates > 0, and every
    loss weight (the fields named w_*) >= 0; raises ConfigError naming what is wrong."""
    if min(epochs) < 0 or config.batch_size < 1 or min(lrs) <= 0:
        raise ConfigError(f"{name} needs epochs >= 0, batch_size >= 1 and positive learning rates (got epochs "
                          f"{epochs}, batch_size {config.batch_size}, learning rates {lrs})")
    negative = {k: v for k, v in asdict(config).items() if k.startswith("w_") and v < 0}
    if negative:
        raise ConfigError(f"{name}: loss weights must be >= 0, got {negative}")


@dataclass
class SemiAdversarialConfig:
    """Hyper-parameters of one semi-adversarial training run."""

    pretrain_epochs: int = 1
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    w_confound: float = 1.0
    w_pixel: float = 1.0
    w_pixel_op: float = 0.0
    w_keep: float = 8.0
    seed: int = 0
    augmentations: tuple[str, ...] = field(default_factory=tuple)
    max_steps_per_epoch: int | None = None
    pixel_loss: str = "l1"


    def __post_init__(self) -> None:
        check_training("semi-adversarial training", self, (self.pretrain_epochs, self.epochs), (self.lr,))
        self.augmentations = check_names(tuple(self.augmentations))
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ConfigError(f"pixel_loss must be one of {sorted(PIXEL_LOSSES)}, got {self.pixel_loss!r}")


def prototype_inputs(prototypes: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(same, opposite) prototype batches for labels in {0,1}; an unknown label (-1) gets the neutral one twice."""
    known = labels >= 0
    same = torch.where(known, labels, torch.full_like(labels, 2))
    opposite = torch.where(known, 1 - labels, torch.full_like(labels, 2))
    return prototypes[same], prototypes[opposite]


class SemiAdversarialTrainer:
    """Train a PrototypeAutoencoder to keep frozen model `keep` (A) and confound frozen classifier `confound` (B)."""

    def __init__(self, generator: PrototypeAutoencoder, prototypes: np.ndarray, keep: nn.Module,
                 confound: nn.Module, config: SemiAdversarialConfig):
        if prototypes.ndim != 4 or prototypes.shape[0] != 3:
            raise ConfigError(f"prototypes must be (3,C,H,W) [label 0, label 1, neutral], got {prototypes.shape}")
        self.generator, self.keep, self.confound, self.config = generator, keep, confound, config
        self.prototypes = torch.from_numpy(np.ascontiguousarray(prototypes, dtype=np.float32))

    def losses(self, x: torch.Tensor, y: torch.Tensor, full: bool) -> dict[str, torch.Tensor]:
        """Loss terms for one batch; `full=False` is the stage-1 autoencoder (pixel) loss only."""
        cfg = self.config
        same, opposite = prototype_inputs(self.prototypes, y)
        x_sm, x_op = self.generator(x, same, opposite)
        pixel_loss = PIXEL_LOSSES[cfg.pixel_loss]
        if not full:
            pixel = pixel_loss(x_sm, x) + pixel_loss(x_op, x)
            return {"total": pixel, "pixel": pixel}
        confound = F.cross_entropy(self.confound(x_sm), y) + F.cross_entropy(self.confound(x_op), 1 - y)
        pixel = pixel_loss(x_sm, x)
        pixel_op = pixel_loss(x_op, x)
        with torch.no_grad():
            target = self.keep(x)
        keep = 0.5 * ((self.keep(x_sm) - target).pow(2).sum(1) + (self.keep(x_op) - target).pow(2).sum(1)).mean()
        total = cfg.w_confound * confound + cfg.w_pixel * pixel + cfg.w_pixel_op * pixel_op + cfg.w_keep * keep
        return {"total": total, "confound": confound, "pixel": pixel, "pixel_op": pixel_op, "keep": keep}

    def fit(self, images: np.ndarray, labels: np.ndarray, progress: bool = True) -> list[dict[str, float]]:
        """Two-stage training on float images (N,C,H,W) with attribute labels (unknown = -1 are skipped).

        Each epoch oversamples the under-represented label. Returns per-epoch mean loss terms.
        """
        cfg = self.config
        if len(images) != len(labels):
            raise ConfigError(f"{len(images)} images but {len(labels)} labels")
        torch.manual_seed(cfg.seed)
        rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
        x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
        opt = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr)
        history: list[dict[str, float]] = []
        stages = [("pretrain", False)] * cfg.pretrain_epochs + [("semi-adv", True)] * cfg.epochs
        self.generator.train()
        for epoch, (stage, full) in enumerate(stages):
            order = balanced_epoch(labels, rng)
            steps = list(batches(order, cfg.batch_size))
            steps = steps[:cfg.max_steps_per_epoch] if cfg.max_steps_per_epoch else steps
            sums: dict[str, float] = {}
            bar = tqdm(steps, desc=f"SAN {stage} {epoch + 1}/{len(stages)}", leave=False, disable=not progress)
            for idx in bar:
                x = augment(x_all[idx], cfg.augmentations, gen)
                terms = self.losses(x, y_all[idx], full)
                opt.zero_grad()
                terms["total"].backward()
                opt.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.item()
                bar.set_postfix(loss=f"{sums['total'] / (bar.n + 1):.3f}")
            history.append({"stage": stage, **{k: v / len(steps) for k, v in sums.items()}})
        self.generator.eval()
        return history


@torch.no_grad()
def perturb(generator: PrototypeAutoencoder, prototypes: np.ndarray, images: np.ndarray, labels: np.ndarray,
            batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(X_SM, X_OP) float arrays for float images (N,C,H,W) and labels ({0,1}, or -1 = neutral prototype)."""
    generator.eval()
    protos = torch.from_numpy(np.ascontiguousarray(prototypes, dtype=np.float32))
    sm, op = [], []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size])
        same, opposite = prototype_inputs(protos, torch.from_numpy(labels[i:i + batch_size].astype(np.int64)))
        a, b = generator(x, same, opposite)
        sm.append(a)
        op.append(b)
    return torch.cat(sm).numpy(), torch.cat(op).numpy()
