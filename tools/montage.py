"""PNG montages of frames (plain vs keyed, original vs perturbed, ...)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def save_montage(rows: list[np.ndarray], path: str | Path, scale: int = 4, gap: int = 2) -> Path:
    """Save rows of equally-shaped uint8 frames (each row an (N, H, W[, 3]) array) as one PNG grid."""
    from PIL import Image
    rows = [np.asarray(r) for r in rows]
    n, h, w = rows[0].shape[:3]
    color = any(r.ndim == 4 for r in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, n * (w + gap) - gap) + ((3,) if color else ()), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, frame in enumerate(row[:n]):
            frame = np.repeat(frame[..., None], 3, -1) if color and frame.ndim == 2 else frame
            canvas[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = frame
    image = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    image.save(path)
    return path
