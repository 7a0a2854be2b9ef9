"""The label-free SAN: one stage for every face, trained against a gender classifier retrained on its outputs.

The papers' SAN picks its prototypes by the subject's gender, so its change carries the label: a classifier
trained on its outputs reads the gender back (README: 0.99). Here the autoencoder sees the NEUTRAL prototype
in its encoder and its head (X_N), and the deployed output is clip(x + alpha * up(X_N - x_s), 0, 1) for
everyone (model_io change `label_free`). Training alternates two updates per batch (as in the GAN-based
follow-ups of the SAN):

- the adversary D, a fresh gender CNN, learns the gender from the current outputs (CE to the true label);
- the autoencoder minimises
      w_adversary * U(D(out)) + w_confound * U(B(out))          # U = cross-entropy to (1/2, 1/2): no label left
    + w_match * gap(out_s | y) + w_feature * gap(B.body(out) | y) # women's and men's outputs alike: in 8x8
                                                                 # thumbnails, and in B's last feature maps
    + w_pixel * |out - x| + w_keep * ||A(out_s) - A(x_s)||^2     # the face and its identity stay
    + w_ssim * mean(max(0, ssim_floor - SSIM_c(out, x)))         # every colour channel c of every output
                                                                 # keeps SSIM >= ssim_floor
    + w_colour * mean(max(0, dE(out, x) - colour_ceiling))       # and its colour: SSIM tolerates a smooth cast
    + w_colour_peak * mean(max(0, dE95(out, x) - colour_peak_ceiling))  # nowhere a band of strong change (the
                                                                 # 95th percentile of the face's Delta E map)
  with B a frozen gender classifier trained on the original faces (the unadapted reader), A the frozen face
  embedder, both trained on the same fit people, and gap = `group_gap`.

Everything sees the faces under framing and capture changes (augment.CAPTURE). The outputs the adversary
and B read are the full-size deployed outputs (detail above the working size passes through, so they see it).
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from base.errors import ConfigError
from tools.san.augment import CAPTURE, augment, check_names
from tools.san.aux_models import batches, cached_model, gender_cnn, predict, seeded, train_face_embedder
from tools.san.data import NEUTRAL, balanced_epoch, downsample, load_faces64, prototypes, to_float
from tools.san.metrics import COLOUR_SIGMA, COLOUR_SIZE, D65_WHITE, PEAK_PERCENTILE, SRGB_TO_XYZ, SSIM_SIGMA, SSIM_SIZE
from tools.san.model_io import SanEnsemble
from tools.san.nets import ConvNet, FaceEmbedder, PrototypeAutoencoder
from tools.san.semi_adversarial import check_training


@dataclass
class LabelFreeConfig:
    """Hyper-parameters of `keycam san train --label-free` (defaults: the committed model's)."""

    warmup_epochs: int = 1
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    adversary_lr: float = 2e-3
    w_adversary: float = 10.0
    w_confound: float = 0.0
    w_pixel: float = 1.0
    w_keep: float = 2.0
    w_match: float = 0.0
    w_feature: float = 200.0
    w_ssim: float = 100.0
    ssim_floor: float = 0.92
    w_colour: float = 1.0
    colour_ceiling: float = 3.0
    w_colour_peak: float = 1.0
    colour_peak_ceiling: float = 6.0
    max_steps_per_epoch: int | None = None
    augmentations: tuple[str, ...] = ("flip", *CAPTURE)
    work_factor: int = 2
    dec: tuple[int, int] = (48, 24)
    matcher_epochs: int = 10
    gender_epochs: int = 6
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        check_training("label-free training", self, (self.warmup_epochs, self.epochs), (self.lr, self.adversary_lr))
        if not 0 < self.ssim_floor <= 1:
            raise ConfigError(f"ssim_floor must be in (0, 1], got {self.ssim_floor}")
        for name in ("colour_ceiling", "colour_peak_ceiling"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (a Delta E), got {getattr(self, name)}")
        if min(self.matcher_epochs, self.gender_epochs) < 1 or self.work_factor < 1:
            raise ConfigError("matcher_epochs, gender_epochs and work_factor must be >= 1")
        self.augmentations = check_names(tuple(self.augmentations))


def uniform_ce(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of 2-class logits to (1/2, 1/2): smallest when the classifier cannot tell."""
    return -F.log_softmax(logits, dim=1).mean()


def group_gap(images: torch.Tensor, labels: torch.Tensor, pool: int = 8) -> torch.Tensor:
    """How differently the two labels' images are distributed in a batch, estimated without the sampling noise
    of small groups: the squared distance of their mean images per pixel minus its noise (var0/n0 + var1/n1),
    plus the unbiased Gaussian-kernel MMD^2 of their pool x pool thumbnails (median bandwidth), which sees every
    moment at that resolution. 0 when a label has fewer than 2 images. The label-free output should look the
    same for both labels, on average and in spread (a biased estimate would reward flattening every face)."""
    groups = [images[labels == value] for value in (0, 1)]
    if min(len(g) for g in groups) < 2:
        return images.sum() * 0.0
    noise = sum(g.var(0) / len(g) for g in groups)
    means = ((groups[0].mean(0) - groups[1].mean(0)).pow(2) - noise).mean()
    thumbs = [F.adaptive_avg_pool2d(g, pool).flatten(1) for g in groups]
    everything = torch.cat(thumbs)
    dist = torch.cdist(everything, everything).pow(2)
    kernel = torch.exp(-dist / dist.detach().median().clamp_min(1e-8))
    n0, n1 = len(thumbs[0]), len(thumbs[1])
    k00, k11, k01 = kernel[:n0, :n0], kernel[n0:, n0:], kernel[:n0, n0:]
    mmd = ((k00.sum() - k00.diagonal().sum()) / (n0 * (n0 - 1)) + (k11.sum() - k11.diagonal().sum()) / (n1 * (n1 - 1))
           - 2 * k01.mean())
    return means + mmd


def _gaussian_blur(t: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """'Valid' separable Gaussian filtering of each channel of (N,C,H,W), as tools.san.metrics._filter does."""
    g = torch.exp(-(torch.arange(size, dtype=t.dtype, device=t.device) - size // 2) ** 2 / (2 * sigma ** 2))
    g, channels = g / g.sum(), t.shape[1]
    rows = F.conv2d(t, g.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def channel_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel SSIM (N,C) of float images (N,C,H,W) in [0, 1], as tools.san.metrics.channel_ssim
    measures it (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, valid filtering), differentiable."""
    def blur(t: torch.Tensor) -> torch.Tensor:
        return _gaussian_blur(t, SSIM_SIZE, SSIM_SIGMA)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = blur(a), blur(b)
    vx, vy, cxy = blur(a * a) - mx ** 2, blur(b * b) - my ** 2, blur(a * b) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return smap.mean(dim=(2, 3))


def _lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIELAB of sRGB (N,3,H,W) in [0, 1], as tools.san.metrics.srgb_to_lab (channels first), differentiable
    (each branch sees only inputs where it is taken, so neither the power nor the cube root meets 0)."""
    linear = torch.where(rgb > 0.04045, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", rgb.new_tensor(SRGB_TO_XYZ), linear)
    t = xyz / rgb.new_tensor(D65_WHITE).view(1, 3, 1, 1)
    delta = 6 / 29
    f = torch.where(t > delta ** 3, t.clamp_min(delta ** 3) ** (1 / 3), t / (3 * delta ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def colour_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean and peak Delta E*ab ((N,), (N,)) between blurred float RGB images (N,3,H,W) in [0, 1], as
    tools.san.metrics.colour_difference measures them, differentiable."""
    diff = _lab(_gaussian_blur(a, COLOUR_SIZE, COLOUR_SIGMA)) - _lab(_gaussian_blur(b, COLOUR_SIZE, COLOUR_SIGMA))
    flat = (diff.pow(2).sum(1) + 1e-12).sqrt().flatten(1)
    return flat.mean(1), torch.quantile(flat, PEAK_PERCENTILE / 100, dim=1)


class LabelFreeStage(nn.Module):
    """The training-time deployed output: clip(x + up(D_N), 0, 1) for full-size float faces x (N,C,H,W). The
    generator's head starts at zero, so training starts from the unchanged face."""

    def __init__(self, generator: PrototypeAutoencoder, neutral: np.ndarray, factor: int):
        super().__init__()
        self.generator, self.factor = generator, factor
        nn.init.zeros_(generator.head.weight)
        nn.init.zeros_(generator.head.bias)
        self.register_buffer("neutral", torch.from_numpy(np.ascontiguousarray(neutral, dtype=np.float32))[None])

    def small(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.factor) if self.factor > 1 else x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(deployed output, the same before the clamp) at full size."""
        change = self.generator.change(self.small(x), self.neutral.expand(len(x), -1, -1, -1))
        raw = x + F.interpolate(change, size=x.shape[2:], mode="bilinear", align_corners=False)
        return raw.clamp(0, 1), raw


class LabelFreeTrainer:
    """Alternating updates of the autoencoder and its adversary (module doc)."""

    def __init__(self, stage: LabelFreeStage, keep: nn.Module, confound: nn.Module, adversary: nn.Module,
                 config: LabelFreeConfig):
        self.stage, self.keep, self.confound, self.adversary, self.config = stage, keep, confound, adversary, config

    def _generator_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted loss terms (a term of weight 0 is not computed and logs 0), their total, and the mean SSIM."""
        out, raw = self.stage(x)
        cfg = self.config
        similarity = channel_ssim(out, x)
        small_out = functools.cache(lambda: self.stage.small(out))
        colour = functools.cache(lambda: colour_difference(out, x))      # (mean, peak)
        terms = {
            "adversary": (cfg.w_adversary, lambda: uniform_ce(self.adversary(out))),
            "confound": (cfg.w_confound, lambda: uniform_ce(self.confound(out))),
            "pixel": (cfg.w_pixel, lambda: F.l1_loss(raw, x)),  # before the clamp: a saturated pixel still has a gradient
            "keep": (cfg.w_keep, lambda: self._identity_shift(x, small_out())),
            "match": (cfg.w_match, lambda: group_gap(small_out(), y)),
            "feature": (cfg.w_feature, lambda: group_gap(self.confound.body(out), y)),
            "ssim_short": (cfg.w_ssim, lambda: (cfg.ssim_floor - similarity).clamp_min(0).mean()),  # every channel
            "colour_excess": (cfg.w_colour, lambda: (colour()[0] - cfg.colour_ceiling).clamp_min(0).mean()),
            "colour_peak_excess": (cfg.w_colour_peak, lambda: (colour()[1] - cfg.colour_peak_ceiling).clamp_min(0).mean()),
        }
        values = {name: term() if weight else out.new_zeros(()) for name, (weight, term) in terms.items()}
        total = sum(weight * values[name] for name, (weight, _) in terms.items())
        return {"total": total, **values, "ssim": similarity.mean()}

    def _identity_shift(self, x: torch.Tensor, small_out: torch.Tensor) -> torch.Tensor:
        """Mean squared move of the face embedder A's embedding from the original to the output (at working size)."""
        with torch.no_grad():
            target = self.keep(self.stage.small(x))
        return (self.keep(small_out) - target).pow(2).sum(1).mean()

    def fit(self, images: np.ndarray, labels: np.ndarray, progress: bool = True) -> list[dict[str, float]]:
        """Train on full-size float faces (N,C,H,W) with gender labels in {0,1}: `warmup_epochs` of the adversary
        alone (it starts from a competent reader), then `epochs` of alternating updates; per-epoch mean terms."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
        x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
        opt_g = torch.optim.Adam(self.stage.generator.parameters(), lr=cfg.lr)
        opt_d = torch.optim.Adam(self.adversary.parameters(), lr=cfg.adversary_lr, weight_decay=1e-4)
        history = []
        stages = ["warmup"] * cfg.warmup_epochs + ["adversarial"] * cfg.epochs
        for epoch, name in enumerate(stages):
            order = balanced_epoch(labels, rng)
            steps = list(batches(order, cfg.batch_size))
            steps = steps[:cfg.max_steps_per_epoch] if cfg.max_steps_per_epoch else steps
            sums: dict[str, float] = {}
            bar = tqdm(steps, desc=f"label-free SAN {name} {epoch + 1}/{len(stages)}", leave=False, disable=not progress)
            for idx in bar:
                x, y = augment(x_all[idx], cfg.augmentations, gen), y_all[idx]
                terms = {"adversary_ce": self._adversary_step(x, y, opt_d)}
                if name == "adversarial":
                    g_terms = self._generator_terms(x, y)
                    opt_g.zero_grad()
                    g_terms["total"].backward()
                    opt_g.step()
                    terms.update({k: v.item() for k, v in g_terms.items()})
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix(d=f"{sums['adversary_ce'] / (bar.n + 1):.3f}")
            history.append({"stage": name, **{k: v / len(steps) for k, v in sums.items()}})
        self.stage.generator.eval()
        return history

    def _adversary_step(self, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> float:
        """One update of the adversary on the current outputs; returns its cross-entropy."""
        self.adversary.train()
        with torch.no_grad():
            out = self.stage(x)[0]
        loss = F.cross_entropy(self.adversary(out), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        self.adversary.eval()
        return loss.item()


def train_label_free(config: LabelFreeConfig, faces_dir: Path | None = None, log=print) -> SanEnsemble:
    """Train the matcher A and classifier B on the fit people, then the label-free autoencoder against B and a
    retrained adversary; returns a one-member ensemble with change `label_free` at strength 1 (the operating
    point is chosen afterwards on the validation people: `keycam san strength`)."""
    start = time.time()
    fit = load_faces64("fit", faces_dir, config.limit)
    known = fit.gender >= 0
    x_every = to_float(fit.images)
    x_full, y = x_every[known], fit.gender[known]
    x_small = downsample(x_full, config.work_factor)
    protos = prototypes(x_small, y)
    log(f"fit people: {len(x_full)} aligned faces ({int((y == 1).sum())} male / {int((y == 0).sum())} female)")
    x_id = downsample(x_every, config.work_factor)
    matcher = cached_model(FaceEmbedder, lambda: train_face_embedder(x_id, fit.identity, epochs=config.matcher_epochs,
                                                                     seed=config.seed),
                           f"face embedder, {config.matcher_epochs} epochs, seed {config.seed}", x_id, fit.identity)
    confound = gender_cnn(x_full, y, epochs=config.gender_epochs, seed=config.seed + 1,
                          augmentations=config.augmentations, desc="gender classifier B")
    stage = LabelFreeStage(seeded(lambda: PrototypeAutoencoder(3, dec=config.dec), config.seed), protos[NEUTRAL],
                           config.work_factor)
    adversary = seeded(lambda: ConvNet(3, 2), config.seed + 2)
    history = LabelFreeTrainer(stage, matcher, confound, adversary, config).fit(x_full, y)
    outputs = predict(lambda t: stage(t)[0], x_full[:512])
    meta = {"train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "history": history, "train_seconds": time.time() - start, "trained_on": "fit people (LFW train split "
            "minus the validation people, tools.san.data.validation_people), aligned to the 5-point template",
            "prototypes": ["female", "male", "neutral"], "colour": "RGB in, RGB out", "work_size": int(x_small.shape[-1]),
            "change": "label_free", "strength": {"female": 1.0, "male": 1.0, "unknown": 1.0},
            "members": [{"augmentations": list(config.augmentations), "seed": config.seed,
                         "l1_fit": float(np.abs(outputs - x_full[:512]).mean())}]}
    return SanEnsemble([stage.generator], protos, meta)
