"""Attack 5, frames only: rebuild frames from N captured keyed frames and public images, without the model.

A frame thief holds keyed frames (a frame buffer, a log, a backup) but no model. Natural images are
smooth, so the correlation between two plain pixels says how close they are; a pixel-level sensor key
moves the pixels but keeps their correlations (a per-pixel gain and offset do not change correlation).
The attacker estimates the keyed pixels' correlation matrix over the captured frames and the plain
pixel correlation matrix of public images of the same kind (the training split, never the attacked
frames), and graph-matches the two (quadratic assignment, FAQ, maximising the overlap). FAQ finds a
local optimum that depends on its start: it is started from matches of the two matrices' leading
eigenvectors (2, 4, 8 and 16 of them), from the barycenter and from random doubly-stochastic points,
and the best match by its score is kept. Each keyed pixel is then placed at its match, normalised by its
min/max over the captured frames, in the polarity whose mean frame is closer to the public mean image.

The victim's key is used only to score the result (pixels placed exactly).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import click
import numpy as np
from scipy.optimize import linear_sum_assignment, quadratic_assignment

from tools.attacks.metrics import similarity
from tools.attacks.structure import normalise, reconstruct, true_positions
from tools.attacks.target import AttackError, Target

DEFAULT_FRAMES = (1000, 10000)
SCORED_FRAMES = 2000          # reconstructions scored on the first frames captured (recognition is the slow part)
MIN_FRAMES = 20

Progress = Callable[[str], None]


def _quiet(msg: str) -> None:
    """No progress lines."""


def _stderr(msg: str) -> None:
    click.echo(msg, err=True)


@dataclass(frozen=True)
class Starts:
    """Where FAQ starts: eigenvector matches of these sizes, the barycenter, random points."""
    eigen: tuple[int, ...] = (2, 4, 8, 16)
    barycenter: bool = True
    random: int = 1
    maxiter: int = 30
    seed: int = 0


FAST_STARTS = Starts(eigen=(16,), barycenter=False, random=0, maxiter=10)


@dataclass(frozen=True)
class Matching:
    """The attacker's match: per keyed pixel, the public pixel it is placed at."""
    source: np.ndarray
    score: float
    start: str
    scores: dict[str, float]        # every start's final score


def correlation(frames: np.ndarray) -> np.ndarray:
    """Pixel correlation matrix over frames (frames x pixels); constant pixels correlate 0, diagonal 0."""
    x = np.asarray(frames, dtype=np.float64)
    x = x - x.mean(axis=0)
    norm = np.sqrt(np.einsum("ij,ij->j", x, x))
    x = x / np.where(norm > 1e-9, norm, np.inf)
    c = x.T @ x
    np.fill_diagonal(c, 0.0)
    return c


def eigen_embedding(c: np.ndarray, k: int) -> np.ndarray:
    """Each pixel's coordinates on the k leading eigenvectors of c, scaled by sqrt(|eigenvalue|)."""
    values, vectors = np.linalg.eigh(c)
    top = np.argsort(values)[::-1][:k]
    return vectors[:, top] * np.sqrt(np.abs(values[top]))


def spectral_match(keyed_emb: np.ndarray, public_emb: np.ndarray) -> np.ndarray:
    """Assign keyed pixels to public pixels by the distance of their eigenvector embeddings.

    An eigenvector's sign is arbitrary. Its entries' distribution does not depend on the pixel order,
    so each public eigenvector's sign is the one whose sorted entries lie closer to the keyed one's.
    """
    public_emb = public_emb.copy()
    for j in range(public_emb.shape[1]):
        a = np.sort(keyed_emb[:, j])
        if np.abs(a - np.sort(-public_emb[:, j])).sum() < np.abs(a - np.sort(public_emb[:, j])).sum():
            public_emb[:, j] *= -1
    dist = ((keyed_emb[:, None, :] - public_emb[None, :, :]) ** 2).sum(axis=-1)
    return linear_sum_assignment(dist)[1]


def match(keyed_corr: np.ndarray, public_corr: np.ndarray, starts: Starts = Starts(),
          progress: Progress = _quiet) -> Matching:
    """Graph-match the keyed correlation matrix to the public one from every start; keep the best."""
    n = len(keyed_corr)
    if public_corr.shape != (n, n):
        raise AttackError(f"keyed frames have {n} pixels, the public images {len(public_corr)}")
    points: dict[str, object] = {}
    if starts.eigen:
        k_max = max(starts.eigen)
        keyed_emb, public_emb = eigen_embedding(keyed_corr, k_max), eigen_embedding(public_corr, k_max)
        for k in starts.eigen:
            points[f"eigen{k}"] = np.eye(n)[spectral_match(keyed_emb[:, :k], public_emb[:, :k])]
    if starts.barycenter:
        points["barycenter"] = "barycenter"
    rng = np.random.default_rng(starts.seed)
    for i in range(starts.random):
        points[f"random{i}"] = "randomized"
    if not points:
        raise AttackError("no FAQ start chosen")
    scores, sources = {}, {}
    for name, p0 in points.items():
        progress(f"    graph matching from the {name} start ...")
        res = quadratic_assignment(keyed_corr, public_corr, method="faq",
                                   options={"maximize": True, "P0": p0, "maxiter": starts.maxiter, "rng": rng})
        scores[name], sources[name] = float(res.fun), np.asarray(res.col_ind)
    best = max(scores, key=scores.get)
    return Matching(sources[best], scores[best], best, scores)


def place(values: np.ndarray, source: np.ndarray, public_mean: np.ndarray) -> tuple[np.ndarray, str]:
    """Frames with each normalised keyed pixel at its matched position, in the polarity (as is or
    inverted) whose mean frame is closer to the public mean image."""
    recon = reconstruct(values, source)
    inverted = 1.0 - recon
    err = lambda x: float(np.mean((x.mean(axis=0) - public_mean) ** 2))  # noqa: E731
    return (recon, "as is") if err(recon) <= err(inverted) else (inverted, "inverted")


def attack_frames(keyed: np.ndarray, public: np.ndarray, starts: Starts = Starts(),
                  progress: Progress = _quiet) -> tuple[np.ndarray, Matching, str]:
    """The attack proper: reconstructed frames (frames x pixels, in [0, 1]) from keyed uint8 frames
    and public plain frames in [0, 1]; also the match and the polarity chosen."""
    keyed = np.asarray(keyed).reshape(len(keyed), -1)
    if len(keyed) < MIN_FRAMES:
        raise AttackError(f"the frames-only attack needs at least {MIN_FRAMES} captured frames, got {len(keyed)}")
    progress(f"    correlating {len(keyed)} keyed frames and {len(public)} public images ...")
    m = match(correlation(keyed), correlation(public), starts, progress)
    recon, polarity = place(normalise(keyed), m.source, np.asarray(public).mean(axis=0))
    return recon, m, polarity


def run_frames_only(target: Target, frames: tuple[int, ...] = DEFAULT_FRAMES, public: int | None = None,
                    starts: Starts = Starts(), progress: Progress = _stderr) -> tuple[dict, dict]:
    """The attack on the first N test frames keyed by the victim, for each N in `frames`.

    Public images: the first `public` training frames (default: the whole training split). Every
    reconstruction is scored on its first SCORED_FRAMES frames (all of them when N is smaller).
    """
    if not frames:
        raise AttackError("give at least one number of captured frames")
    h, w = target.shape
    public_plain, _ = target.train_frames(public)
    truth = true_positions(target)
    result: dict = {"public_frames": len(public_plain), "by_frames": {}}
    figs: dict = {}
    for n in sorted(set(frames)):
        t0 = time.perf_counter()
        plain, _ = target.test_frames(n)
        keyed = target.keyed(plain)
        progress(f"  frames-only: {n} captured frames ...")
        recon, m, polarity = attack_frames(keyed, public_plain, starts, progress)
        scored = min(n, SCORED_FRAMES)
        result["by_frames"][str(n)] = {
            "pixels_placed": float(np.mean(m.source == truth)),
            "constant_pixels": int(np.sum(keyed.min(axis=0) == keyed.max(axis=0))),
            **similarity(recon[:scored], plain[:scored], (h, w)), "recognised": target.recognised(recon[:scored]),
            "scored_frames": scored, "match_score": m.score, "best_start": m.start, "start_scores": m.scores,
            "polarity": polarity, "seconds": round(time.perf_counter() - t0, 2)}
        figs = {"plain": plain, "keyed": keyed, "recon": recon, "shape": (h, w)}
    largest = result["by_frames"][str(max(frames))]
    scored = figs["plain"][:largest["scored_frames"]]
    result.update(frames=max(frames), **{k: largest[k] for k in ("pixels_placed", "ssim", "psnr", "recognised")},
                  blank_ssim=similarity(np.zeros_like(scored), scored, (h, w))["ssim"],
                  mean_image_ssim=similarity(np.broadcast_to(public_plain.mean(axis=0), scored.shape), scored,
                                             (h, w))["ssim"])
    return result, figs
