"""Export one SAN member as a self-contained ONNX stage: full-size face crop in, deployed output out.

The stage bakes in the prototypes for a given source gender (the papers pick the prototypes from the
subject's gender) and the model's stored change form, area-downsamples the crop to the SAN's working
size, runs the autoencoder and adds the upsampled change to the crop, exactly as SanEnsemble.deployed
does. Ops: AveragePool, Conv, LeakyRelu, Resize, Concat, Sigmoid, Expand, Sub/Add, Mul, Clip.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tools.san.errors import SanModelError
from tools.san.model_io import SanEnsemble, check_alpha, check_change
from tools.san.nets import PrototypeAutoencoder

GENDERS = {"female": 0, "male": 1}


class SanStage(nn.Module):
    """The deployed output for a fixed source gender, change form, strength and crop size (a multiple of the
    SAN's working size): clip(x + strength * upsample(X_OP - x_small), 0, 1) (residual) or
    clip(x + strength * upsample(X_OP - X_SM), 0, 1) (differential)."""

    def __init__(self, member: PrototypeAutoencoder, prototypes: np.ndarray, gender: int, size: int,
                 strength: float = 1.0, change: str = "residual"):
        super().__init__()
        work = int(prototypes.shape[-1])
        if size % work:
            raise SanModelError(f"export size {size} must be a multiple of the SAN working size {work}")
        self.member, self.factor, self.size = member.eval(), size // work, size
        self.strength, self.change = check_alpha(strength), check_change(change)
        self.register_buffer("same", torch.from_numpy(prototypes[gender][None].copy()))
        self.register_buffer("opposite", torch.from_numpy(prototypes[1 - gender][None].copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(x, self.factor) if self.factor > 1 else x
        n = small.shape[0]
        x_sm, x_op = self.member(small, self.same.expand(n, -1, -1, -1), self.opposite.expand(n, -1, -1, -1))
        base = x_sm if self.change == "differential" else small
        change = F.interpolate(x_op - base, scale_factor=float(self.factor), mode="bilinear", align_corners=False)
        return (x + self.strength * change).clamp(0.0, 1.0)


def make_stage(ensemble: SanEnsemble, member: int, gender: str, size: int, strength: float | None = None,
               change: str | None = None) -> SanStage:
    """Member `member`'s stage for `gender` faces of `size` x `size`; strength / change None = the model's stored
    ones."""
    if gender not in GENDERS:
        raise SanModelError(f"gender must be one of {sorted(GENDERS)}, got {gender!r}")
    if not 0 <= member < len(ensemble.members):
        raise SanModelError(f"member {member} does not exist; the ensemble has {len(ensemble.members)}")
    alpha = ensemble.strength[gender] if strength is None else strength
    return SanStage(ensemble.members[member], ensemble.prototypes, GENDERS[gender], size, alpha,
                    change or ensemble.change).eval()


def export_onnx(stage: SanStage, path: Path) -> None:
    """Write a stage (see `make_stage`) to `path` as ONNX (opset 17): input `face`, output `x_op`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(stage, (torch.zeros(1, 3, stage.size, stage.size),), str(path), dynamo=False,
                          opset_version=17, input_names=["face"], output_names=["x_op"])
