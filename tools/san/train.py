"""Train the papers' SAN ensemble on the fit people (LFW train minus the validation people): prototypes, aux models, members."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from base.errors import ConfigError
from tools.san.augment import check_names
from tools.san.aux_models import gender_cnn, predict, seeded, train_face_embedder
from tools.san.data import downsample, load_faces64, prototypes, to_float
from tools.san.model_io import SanEnsemble
from tools.san.nets import PrototypeAutoencoder
from tools.san.semi_adversarial import SemiAdversarialConfig, SemiAdversarialTrainer, perturb

# Ensemble diversity (BTAS 2018): each member's auxiliary gender classifier and SAN see differently
# augmented data and a different seed.
MEMBER_AUGMENTATIONS: tuple[tuple[str, ...], ...] = (
    ("flip",),
    ("flip", "color"),
    ("flip", "geometry", "noise"),
    ("flip", "blur", "color"),
)


ADVERSARIES = ("member", "mean")

# The committed model's semi-adversarial settings (every member; seed and augmentations vary per member).
COMMITTED_SAN = SemiAdversarialConfig(pretrain_epochs=2, epochs=5, batch_size=32, lr=3e-3, w_confound=3.0,
                                      w_pixel=1.0, w_pixel_op=0.1, w_keep=2.0, max_steps_per_epoch=80)


class MeanLogits(torch.nn.Module):
    """The mean logits of several frozen classifiers: one adversary made of all members' classifiers."""

    def __init__(self, models: list[torch.nn.Module]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


@dataclass
class TrainConfig:
    """Everything `keycam san train` needs; defaults are the committed model's settings."""

    members: int = 3
    seed: int = 0
    matcher_epochs: int = 10
    gender_epochs: int = 5
    san: SemiAdversarialConfig = field(default_factory=lambda: replace(COMMITTED_SAN))
    adversary: str = "member"      # member: each SAN confounds its own classifier; mean: the mean of all members'
    dec: tuple[int, int] = (48, 24)
    work_factor: int = 2
    limit: int | None = None
    augmentations: list[tuple[str, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.members <= len(MEMBER_AUGMENTATIONS):
            raise ConfigError(f"members must be 1..{len(MEMBER_AUGMENTATIONS)}, got {self.members}")
        if min(self.matcher_epochs, self.gender_epochs) < 1:
            raise ConfigError("matcher_epochs and gender_epochs must be >= 1")
        if self.adversary not in ADVERSARIES:
            raise ConfigError(f"adversary must be one of {', '.join(ADVERSARIES)}, got {self.adversary!r}")
        self.augmentations = [check_names(a) for a in MEMBER_AUGMENTATIONS[:self.members]]

    def member_config(self, index: int) -> SemiAdversarialConfig:
        """The semi-adversarial settings of member `index`."""
        return replace(self.san, seed=self.seed + 100 * (index + 1), augmentations=self.augmentations[index])


def _accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predict(model, images).argmax(1) == labels).mean())


def _pair_accuracy(embedder: torch.nn.Module, images: np.ndarray, pairs: np.ndarray, same: np.ndarray,
                   threshold: float) -> float:
    emb = predict(embedder, images)
    cos = (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1)
    return float(((cos > threshold) == same).mean())


def train_ensemble(config: TrainConfig, faces_dir: Path | None = None, log=print) -> SanEnsemble:
    """Train the auxiliary matcher, one auxiliary gender classifier per member, and the member SANs.

    Reports seen-model sanity numbers (auxiliary models on the held-out test split) in the metadata;
    the numbers that matter come from `keycam san eval` with unseen models.
    """
    torch.manual_seed(config.seed)
    start = time.time()
    train, test = load_faces64("fit", faces_dir, config.limit), load_faces64("test", faces_dir, config.limit)
    # The SAN and its auxiliary networks work at 1/work_factor resolution (32x32 from the 64x64 crops);
    # at use time the SAN's change is upsampled onto the full-resolution image (SanEnsemble.perturb).
    x, y = downsample(to_float(train.images), config.work_factor), train.gender
    x_test, known = downsample(to_float(test.images), config.work_factor), test.gender >= 0
    protos = prototypes(x, y)
    log(f"train split: {len(x)} images ({int((y == 1).sum())} male / {int((y == 0).sum())} female); "
        f"test split: {len(x_test)} images")

    matcher = train_face_embedder(x, train.identity, epochs=config.matcher_epochs, seed=config.seed)
    emb = predict(matcher, x)
    same_id = train.identity[:, None] == train.identity[None, :]
    cos = emb @ emb.T
    threshold = float((cos[same_id & ~np.eye(len(x), dtype=bool)].mean() + cos[~same_id].mean()) / 2)
    seen = {"matcher_threshold": threshold,
            "matcher_pair_acc_orig": _pair_accuracy(matcher, x_test, test.pair_idx, test.pair_same, threshold)}
    log(f"aux matcher: test pair acc {seen['matcher_pair_acc_orig']:.3f} (cosine > {threshold:.3f})")

    def gender_classifier(i: int) -> torch.nn.Module:
        cfg = config.member_config(i)
        return gender_cnn(x, y, epochs=config.gender_epochs, seed=cfg.seed, augmentations=tuple(cfg.augmentations),
                          desc=f"aux gender #{i}")

    # "mean": every classifier first, each SAN confounds their mean (transfers better to unseen classifiers)
    genders = [gender_classifier(i) for i in range(config.members)] if config.adversary == "mean" else []
    members, member_meta = [], []
    for i in range(config.members):
        cfg = config.member_config(i)
        gender = genders[i] if genders else gender_classifier(i)
        adversary = MeanLogits(genders).eval() if genders else gender
        san = seeded(lambda: PrototypeAutoencoder(3, dec=config.dec), cfg.seed)
        history = SemiAdversarialTrainer(san, protos, matcher, adversary, cfg).fit(x, y)
        x_sm, x_op = perturb(san, protos, x_test, test.gender)
        stats = {
            "augmentations": list(cfg.augmentations), "seed": cfg.seed,
            "aux_gender_acc_orig": _accuracy(gender, x_test[known], test.gender[known]),
            "aux_gender_acc_sm": _accuracy(gender, x_sm[known], test.gender[known]),
            "aux_gender_acc_op": _accuracy(gender, x_op[known], test.gender[known]),
            "aux_matcher_pair_acc_op": _pair_accuracy(matcher, x_op, test.pair_idx, test.pair_same, threshold),
            "l1_op": float(np.abs(x_op - x_test).mean()),
            "history": history,
        }
        log(f"member {i} {'+'.join(cfg.augmentations)}: seen gender acc orig {stats['aux_gender_acc_orig']:.3f} "
            f"SM {stats['aux_gender_acc_sm']:.3f} OP {stats['aux_gender_acc_op']:.3f}; seen matcher pair acc OP "
            f"{stats['aux_matcher_pair_acc_op']:.3f}; L1(OP) {stats['l1_op']:.3f}")
        members.append(san)
        member_meta.append(stats)
    cfg_dict = asdict(config)
    cfg_dict["augmentations"] = [list(a) for a in config.augmentations]
    meta = {"train_config": cfg_dict, "seen": seen, "members": member_meta, "train_seconds": time.time() - start,
            "prototypes": ["female", "male", "neutral"], "colour": "RGB in, RGB out", "work_size": int(x.shape[-1])}
    return SanEnsemble(members, protos, meta)
