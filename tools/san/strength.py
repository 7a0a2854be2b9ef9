"""Perturbation strength: the privacy-utility curve of x + alpha * (SAN change) and its operating point.

The SAN's change (model_io.CHANGES: X_OP - x or X_OP - X_SM at the working size, upsampled) is added with
a strength alpha per source gender (the prototypes are already chosen by the subject's gender, as in the
papers). The sweep runs the UNSEEN models once per alpha on every image; because the unseen models see one
image at a time, any (alpha_female, alpha_male) pair is then a recombination of those per-image outputs.

Operating-point rule (privacy is the goal, utility the constraint): among the grid points that meet both
targets on the selection split (gender balanced accuracy <= 0.60 and verification accuracy drop <= 3
points), take the balanced accuracy closest to chance (0.5: below it the classifier is inverted, which
tells the gender as well as above it), then the highest verification accuracy, then the smallest total
strength. With no such point, the same order over the points meeting the utility target. By default only
equal strengths (alpha_female = alpha_male) are candidates: a per-gender strength can reach chance by
pushing everyone onto one gender, makes one gender bear the identity cost, and gives the perturbation's size
away as a gender cue; `per_gender` lifts that restriction.
The selection split is the 64x64 test split (490 official pairs); the report's headline verification
numbers come from the 112x112 View-2 folds 1-2 file (1,200 pairs) of the same people.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from tools.san.data import FaceSet
from tools.san.metrics import gender_scores, pair_distances, ssim, verification_accuracy
from tools.san.model_io import SanEnsemble, check_change
from tools.san.unseen import MATCH_THRESHOLD

GENDER_TARGET, VERIF_DROP_TARGET, CHANCE = 0.60, 0.03, 0.5
ALPHAS = {"residual": (0.0, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0),       # alpha 1 = X_OP itself
          "differential": (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)}       # the difference is small: larger strengths


@dataclass
class StrengthOutcomes:
    """Per-image unseen-model outputs of one member's X_OP at each strength on one dataset."""

    alphas: list[float]
    gender_pred: np.ndarray      # (A, N) 1 male / 0 female
    emb: np.ndarray              # (A, N, 128) dlib descriptors (NaN for images in no pair)
    ssim: np.ndarray             # (A, N) to the original

    def subset(self, keep: np.ndarray) -> StrengthOutcomes:
        """The outcomes of the images selected by boolean mask `keep` (as FaceSet.subset selects them)."""
        return StrengthOutcomes(self.alphas, self.gender_pred[:, keep], self.emb[:, keep], self.ssim[:, keep])


def sweep(ensemble: SanEnsemble, member: int, fs: FaceSet, evaluator, change: str = "differential",
          alphas=None, log=print) -> StrengthOutcomes:
    """The deployed output (change form `change`) of `member` at every strength in `alphas` (default:
    ALPHAS[change]), through the unseen gender classifier and matcher."""
    alphas = ALPHAS[check_change(change)] if alphas is None else alphas
    if 0.0 not in alphas:
        raise ValueError("the sweep needs alpha 0 (the originals) as its reference")
    preds, embs, ssims = [], [], []
    for alpha in alphas:
        x_op = ensemble.deployed(fs.images, fs.gender, member, strength=float(alpha), change=change)
        preds.append(evaluator.gender.predict(x_op))
        embs.append(evaluator.embed(fs, x_op))
        ssims.append(ssim(fs.images, x_op))
        log(f"  strength {alpha:.2f}: gender bacc {gender_scores(preds[-1], fs.gender)['bacc']:.3f}")
    return StrengthOutcomes(list(map(float, alphas)), np.stack(preds), np.stack(embs), np.stack(ssims))


def _point(out: StrengthOutcomes, fs: FaceSet, a_f: int, a_m: int, verif_orig: float) -> dict:
    """Metrics when female images get strength alphas[a_f] and all others alphas[a_m]."""
    female = fs.gender == 0
    pred = np.where(female, out.gender_pred[a_f], out.gender_pred[a_m])
    emb = np.where(female[:, None], out.emb[a_f], out.emb[a_m])
    verif = verification_accuracy(pair_distances(emb, fs.pair_idx), fs.pair_same, MATCH_THRESHOLD)
    scores = gender_scores(pred, fs.gender)
    point = {"female": out.alphas[a_f], "male": out.alphas[a_m], "gender_bacc": scores["bacc"],
             "gender_acc_female": scores["acc_female"], "gender_acc_male": scores["acc_male"],
             "verif_acc": verif, "verif_drop": verif_orig - verif,
             "ssim": float(np.where(female, out.ssim[a_f], out.ssim[a_m]).mean())}
    point["meets_targets"] = bool(point["gender_bacc"] <= GENDER_TARGET and point["verif_drop"] <= VERIF_DROP_TARGET)
    return point


def strength_grid(out: StrengthOutcomes, fs: FaceSet) -> list[dict]:
    """Every (alpha_female, alpha_male) combination of the sweep with its privacy and utility numbers."""
    zero = out.alphas.index(0.0)
    verif_orig = verification_accuracy(pair_distances(out.emb[zero], fs.pair_idx), fs.pair_same, MATCH_THRESHOLD)
    n = len(out.alphas)
    return [_point(out, fs, a_f, a_m, verif_orig) for a_f, a_m in product(range(n), range(n))]


def choose_operating_point(points: list[dict], per_gender: bool = False) -> dict:
    """The module's rule: gender bacc closest to chance among points meeting both targets (else the utility
    target); equal strengths only unless `per_gender`."""
    points = points if per_gender else [p for p in points if p["female"] == p["male"]]
    feasible = [p for p in points if p["meets_targets"]]
    pool = feasible or [p for p in points if p["verif_drop"] <= VERIF_DROP_TARGET]
    if not pool:
        raise ValueError("no strength meets the utility target (alpha 0 always does: is the sweep empty?)")
    return min(pool, key=lambda p: (abs(p["gender_bacc"] - CHANCE), -p["verif_acc"], p["female"] + p["male"]))


def pareto_front(points: list[dict]) -> list[dict]:
    """Points no other point beats on both a gender bacc closer to chance and a higher verification accuracy."""
    def gap(p: dict) -> float:
        return abs(p["gender_bacc"] - CHANCE)

    front = [p for p in points if not any(gap(q) <= gap(p) and q["verif_acc"] >= p["verif_acc"]
                                          and (gap(q), q["verif_acc"]) != (gap(p), p["verif_acc"]) for q in points)]
    return sorted(front, key=gap)
