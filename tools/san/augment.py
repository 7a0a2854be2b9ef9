"""Batch data augmentations (torch, seeded); different mixes make the ensemble members diverse."""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

from tools.san.data import to_float, to_uint8
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


def _jpeg(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image through a JPEG round trip at a random quality in [30, 90] (PIL, 4:2:0 chroma)."""
    from PIL import Image
    quality = (30 + 60 * torch.rand(len(x), generator=g)).int().tolist()
    codes = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for code, q in zip(codes, quality):
        buf = io.BytesIO()
        Image.fromarray(code).save(buf, format="JPEG", quality=q)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.dtype) / 255.0


AUGMENTATIONS = {"flip": _flip, "color": _color, "geometry": _geometry, "noise": _noise, "blur": _blur, "jpeg": _jpeg}
# Framing and capture changes (scale, shift, tilt; blur, sensor noise, JPEG): the label-free SAN trains and its
# operating point is chosen under them, and `eval` reports the unseen classifier on test faces so changed.
CAPTURE = ("geometry", "blur", "noise", "jpeg")


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


def capture_perturbed(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 faces (N,H,W,3) under one seeded draw of the CAPTURE changes (a stand-in for other datasets)."""
    x = augment(torch.from_numpy(to_float(images)), CAPTURE, torch.Generator().manual_seed(seed))
    return to_uint8(x.numpy())
