"""Batch data augmentations (torch, seeded); different mixes make the ensemble members diverse."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tools.san.errors import FaceDataError


def _flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mask = torch.rand(len(x), generator=g) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def _color(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    brightness = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.3
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.5
    saturation = 1 + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.8
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0, 1)


def _geometry(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = len(x)
    angle = (torch.rand(n, generator=g) - 0.5) * 0.35
    scale = 1 + (torch.rand(n, generator=g) - 0.5) * 0.15
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 0.15
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mask = torch.rand(len(x), generator=g) < 0.5
    small = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)
    return torch.where(mask[:, None, None, None], small, x)


AUGMENTATIONS = {"flip": _flip, "color": _color, "geometry": _geometry, "noise": _noise, "blur": _blur}


def check_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate augmentation names (order is kept)."""
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise FaceDataError(f"unknown augmentation(s) {unknown}; choose from {sorted(AUGMENTATIONS)}")
    return tuple(names)


def augment(x: torch.Tensor, names: tuple[str, ...], g: torch.Generator) -> torch.Tensor:
    """Apply the named augmentations in order to a float batch (N,C,H,W) in [0,1]."""
    for name in names:
        x = AUGMENTATIONS[name](x, g)
    return x
