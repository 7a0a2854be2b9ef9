"""Image similarity for attack scoring: SSIM (Gaussian window, Wang et al. 2004) and PSNR, in numpy."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

_C1, _C2 = (0.01 ** 2), (0.03 ** 2)     # for images in [0, 1]


def _as_batch(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape((-1,) + tuple(shape))


def ssim(a: np.ndarray, b: np.ndarray, shape: tuple[int, int], sigma: float = 1.5) -> np.ndarray:
    """Per-frame SSIM of frames a vs b in [0, 1] (flat (B, H*W) or (B, H, W)); Gaussian window sigma 1.5."""
    a, b = _as_batch(a, shape), _as_batch(b, shape)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    blur = lambda x: gaussian_filter(x, sigma=(0, sigma, sigma), mode="reflect", truncate=3.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a ** 2 + mu_b ** 2 + _C1) * (var_a + var_b + _C2)
    return (num / den).mean(axis=(1, 2))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of frames in [0, 1] (capped at 100 dB for identical frames)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    mse = np.mean((a - b) ** 2, axis=1)
    return np.minimum(10 * np.log10(1.0 / np.maximum(mse, 1e-10)), 100.0)


def similarity(recon: np.ndarray, plain: np.ndarray, shape: tuple[int, int]) -> dict[str, float]:
    """Mean SSIM and PSNR of reconstructed frames against the plain frames."""
    recon = np.clip(recon, 0.0, 1.0)
    return {"ssim": float(np.mean(ssim(recon, plain, shape))), "psnr": float(np.mean(psnr(recon, plain)))}
