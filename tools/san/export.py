"""Export one SAN member as a self-contained ONNX stage: full-size face crop in, deployed output out.

The stage bakes in the model's stored change form and its prototypes, area-downsamples the crop to the SAN's
working size, runs the autoencoder and adds the upsampled change to the crop, exactly as SanEnsemble.deployed
does. The gendered forms (residual, differential) take the prototypes of a given source gender (the papers
pick them from the subject's gender: one stage per gender); the label_free form takes the neutral prototype
for both and needs no gender (one stage for every face; a gender given for it is refused, so that no file
looks like a per-gender stage). Ops: AveragePool, Conv, LeakyRelu, Resize, Concat, Sigmoid, Expand, Sub/Add,
Mul, Clip.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tools.san.data import FEMALE, MALE, NEUTRAL
from tools.san.errors import SanModelError
from tools.san.model_io import SanEnsemble, check_alpha, check_change
from tools.san.nets import PrototypeAutoencoder

GENDERS = {"female": FEMALE, "male": MALE}
LABEL_FREE_NOTE = "label-free, one stage for every face"


class SanStage(nn.Module):
    """The deployed output for a fixed change form, strength, crop size (a multiple of the SAN's working size)
    and, for the gendered forms, source gender: clip(x + strength * upsample(X_OP - x_small), 0, 1) (residual),
    clip(x + strength * upsample(X_OP - X_SM), 0, 1) (differential) or clip(x + strength * upsample(D_N), 0, 1)
    (label_free: the head's linear output with the neutral prototype in the encoder and the head).
    `gender`: 0 female, 1 male, None for the label_free form (and only for it)."""

    def __init__(self, member: PrototypeAutoencoder, prototypes: np.ndarray, gender: int | None, size: int,
                 strength: float = 1.0, change: str = "residual"):
        super().__init__()
        work = int(prototypes.shape[-1])
        if size % work:
            raise SanModelError(f"export size {size} must be a multiple of the SAN working size {work}")
        self.member, self.factor, self.size = member.eval(), size // work, size
        self.strength, self.change = check_alpha(strength), check_change(change)
        if (gender is None) != self.label_free or gender not in (None, *GENDERS.values()):
            raise SanModelError(f"a {self.change} stage takes "
                                f"{'no gender' if self.label_free else 'gender 0 (female) or 1 (male)'}, got {gender!r}")
        self.gender = gender
        same, opposite = (NEUTRAL, NEUTRAL) if gender is None else (gender, 1 - gender)
        self.register_buffer("same", torch.from_numpy(prototypes[same][None].copy()))
        self.register_buffer("opposite", torch.from_numpy(prototypes[opposite][None].copy()))

    @property
    def label_free(self) -> bool:
        """Is this the one stage for every face (no gender input)?"""
        return self.change == "label_free"

    @property
    def gender_name(self) -> str | None:
        """'female' / 'male' for a gendered stage, None for the label-free one."""
        return None if self.gender is None else next(k for k, v in GENDERS.items() if v == self.gender)

    @property
    def faces(self) -> str:
        """Which faces the stage is for, in words (the export's notes and metadata)."""
        return LABEL_FREE_NOTE if self.gender is None else f"{self.gender_name} faces (one stage per source gender)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(x, self.factor) if self.factor > 1 else x
        n = small.shape[0]
        if self.label_free:
            delta = self.member.change(small, self.same.expand(n, -1, -1, -1))
        else:
            x_sm, x_op = self.member(small, self.same.expand(n, -1, -1, -1), self.opposite.expand(n, -1, -1, -1))
            delta = x_op - (x_sm if self.change == "differential" else small)
        change = F.interpolate(delta, scale_factor=float(self.factor), mode="bilinear", align_corners=False)
        return (x + self.strength * change).clamp(0.0, 1.0)


def make_stage(ensemble: SanEnsemble, member: int, gender: str | None, size: int, strength: float | None = None,
               change: str | None = None) -> SanStage:
    """Member `member`'s stage for `size` x `size` faces; strength / change None = the model's stored ones.

    `gender` ('female' / 'male') picks the prototypes of the gendered change forms and is required for them; the
    label_free form is one stage for every face and refuses a gender (None). Its strength is
    SanEnsemble.one_strength, as in SanEnsemble.deployed."""
    change = check_change(change or ensemble.change)
    if change == "label_free" and gender is not None:
        raise SanModelError(f"the label_free change is one stage for every face: it takes no gender (got {gender!r}; "
                            "drop --gender)")
    if change != "label_free" and gender not in GENDERS:
        given = "none given" if gender is None else f"got {gender!r}"
        raise SanModelError(f"the {change} change builds one stage per source gender: give the gender of the faces "
                            f"it is for (--gender {' or '.join(GENDERS)}; {given}); only a label_free model has one "
                            "stage for every face")
    if not 0 <= member < len(ensemble.members):
        raise SanModelError(f"member {member} does not exist; the ensemble has {len(ensemble.members)}")
    alpha = (ensemble.one_strength(strength) if change == "label_free"
             else ensemble.strength[gender] if strength is None else strength)
    return SanStage(ensemble.members[member], ensemble.prototypes, GENDERS.get(gender), size, alpha, change).eval()


def export_onnx(stage: SanStage, path: Path) -> None:
    """Write a stage (see `make_stage`) to `path` as ONNX (opset 17): input `face`, output `x_op`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(stage, (torch.zeros(1, 3, stage.size, stage.size),), str(path), dynamo=False,
                          opset_version=17, input_names=["face"], output_names=["x_op"])
