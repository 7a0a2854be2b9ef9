"""Evaluation metrics: (balanced) accuracy, verification accuracy, TMR at fixed FMR, SSIM, colour difference (mean and
peak), PSNR."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def gender_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and per-group recall over images with a known label (0 female, 1 male)."""
    known = truth >= 0
    pred, truth = pred[known], truth[known]
    if len(truth) == 0:
        return {"acc": float("nan"), "bacc": float("nan"), "acc_female": float("nan"), "acc_male": float("nan")}
    recall = {g: float((pred[truth == g] == g).mean()) if (truth == g).any() else float("nan") for g in (0, 1)}
    return {"acc": float((pred == truth).mean()), "bacc": float(np.nanmean([recall[0], recall[1]])),
            "acc_female": recall[0], "acc_male": recall[1]}


def rank_auc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of `score` for label 1 against label 0 (ties count half) over images with a known
    label: 0.5 when the score ranks the two labels alike, whatever threshold a reader would pick."""
    known = truth >= 0
    score, truth = score[known], truth[known]
    n1, n0 = int((truth == 1).sum()), int((truth == 0).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[truth == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def pair_distances(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Euclidean distances between the embeddings of each (i, j) pair."""
    return np.linalg.norm(emb[pairs[:, 0]] - emb[pairs[:, 1]], axis=1)


def verification_accuracy(dist: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided right by 'same person iff distance < threshold'."""
    return float(((dist < threshold) == same).mean()) if len(dist) else float("nan")


def all_pairs(identity: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair (i<j) among images selected by `mask`, and whether it is genuine (same identity)."""
    idx = np.flatnonzero(np.ones(len(identity), bool) if mask is None else mask)
    i, j = np.triu_indices(len(idx), k=1)
    pairs = np.stack([idx[i], idx[j]], 1)
    return pairs, identity[pairs[:, 0]] == identity[pairs[:, 1]]


def tmr_at_fmr(dist: np.ndarray, genuine: np.ndarray, fmr: float = 1e-2) -> float:
    """True-match rate at the distance threshold where the false-match rate of impostor pairs is `fmr`."""
    impostor = np.sort(dist[~genuine])
    if len(impostor) == 0 or not genuine.any():
        return float("nan")
    k = int(np.floor(fmr * len(impostor)))
    threshold = impostor[k] if k < len(impostor) else np.inf
    return float((dist[genuine] < threshold).mean())


SSIM_SIZE, SSIM_SIGMA = 11, 1.5    # the SSIM's Gaussian window (Wang et al. 2004)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering over the last two axes of (..., H, W) by a symmetric window."""
    k = len(window)
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=-1) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=-2) @ window


def channel_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image, per-channel SSIM (Wang et al. 2004; 11x11 Gaussian, sigma 1.5) of uint8 images (N,H,W,C): (N,C)."""
    x, y = np.moveaxis(a.astype(np.float64), -1, 1), np.moveaxis(b.astype(np.float64), -1, 1)
    w = _gaussian_window(SSIM_SIZE, SSIM_SIGMA)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _filter(x, w), _filter(y, w)
    vx, vy, cxy = _filter(x * x, w) - mx ** 2, _filter(y * y, w) - my ** 2, _filter(x * y, w) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return smap.mean(axis=(-2, -1))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 RGB (N,H,W,3): the mean of the R, G and B channels' SSIM, so a change spent in
    colour costs as much as one spent in brightness (a luma-only SSIM let a stage recolour faces for free)."""
    return channel_ssim(a, b).mean(axis=1)


# sRGB (D65) -> CIE XYZ, rows X, Y, Z; and the D65 white point
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
D65_WHITE = np.array([0.95047, 1.0, 1.08883])
COLOUR_SIGMA = 2.0       # px at 64x64: the colour difference is read on blurred images (colour vision is low-pass)
COLOUR_SIZE = 4 * int(COLOUR_SIGMA) + 1
PEAK_PERCENTILE = 95.0   # a face's colour peak: this percentile of its Delta E map (a local artefact, not the mean)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L*, a*, b*) of sRGB values in [0, 1] with channels on the LAST axis (D65 white)."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    t = (linear @ SRGB_TO_XYZ.T) / D65_WHITE
    delta = 6 / 29
    f = np.where(t > delta ** 3, np.cbrt(np.maximum(t, delta ** 3)), t / (3 * delta ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def colour_difference_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel CIE76 colour difference (Delta E*ab; ~2.3 is a just-noticeable difference) between uint8 RGB
    images (N,H,W,3) blurred by a Gaussian of COLOUR_SIGMA px (as in S-CIELAB), 'valid' size: the smooth shifts of
    colour and brightness that SSIM tolerates (a cast moves a channel's local mean, which SSIM barely weighs)."""
    w = _gaussian_window(COLOUR_SIZE, COLOUR_SIGMA)
    labs = [srgb_to_lab(np.moveaxis(_filter(np.moveaxis(img.astype(np.float64) / 255, -1, 1), w), 1, -1))
            for img in (a, b)]
    return np.linalg.norm(labs[0] - labs[1], axis=-1)


@dataclass(frozen=True)
class ColourDifference:
    """Per-image summaries of `colour_difference_map`."""

    mean: np.ndarray   # (N,) the face's mean Delta E
    peak: np.ndarray   # (N,) its PEAK_PERCENTILE: a band or strip of strong change, which the mean spreads thin


def colour_difference(a: np.ndarray, b: np.ndarray) -> ColourDifference:
    """Mean and peak colour difference per image (uint8 RGB (N,H,W,3))."""
    flat = colour_difference_map(a, b).reshape(len(a), -1)
    return ColourDifference(flat.mean(axis=1), np.percentile(flat, PEAK_PERCENTILE, axis=1))


def pooled_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of the mean squared error over a whole set (finite when some images are left unchanged)."""
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (N,...)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
