"""Perturbation strength: the privacy-utility curve of x + alpha * (SAN change) and its operating point.

The SAN's change (model_io.CHANGES) is added with a strength alpha (per source gender for the gendered forms;
one alpha for everyone for the label-free form). A sweep runs a gender reader and the dlib matcher once per
alpha on every image; because both see one image at a time, any (alpha_female, alpha_male) pair is then a
recombination of those per-image outputs.

Operating-point rule (privacy is the goal, utility the constraint), `choose_on_validation`:
- **where**: the validation people (tools.san.data: a fixed fifth of the LFW train people, identity-disjoint;
  no network is trained on them), never the test people;
- **privacy reader**: a second-opinion gender CNN trained here on the fit people's original faces (under the
  framing and capture changes), neither the classifier the SAN trained against nor the unseen one that scores
  the result; it reads every point on the clean faces and on one seeded capture-perturbed copy
  (augment.CAPTURE), and the point's balanced accuracy is the one further from chance;
- **utility**: the dlib matcher's verification accuracy on all genuine pairs of the validation people plus as
  many seeded impostor pairs, the mean SSIM and the mean and peak colour difference (metrics.colour_difference);
- **rule**: among the points meeting the targets (gender balanced accuracy within 0.10 of chance on either side:
  below 0.5 the classifier is inverted, which tells the gender as well as above it; verification drop <= 3
  points; SSIM >= 0.90; colour difference Delta E <= 5 on average and <= 8 at the faces' peaks), the strongest:
  the reader is one classifier, and the strength beyond the point where it reads chance is the margin that
  protects against the classifiers that did not choose (a small CNN reaches chance long before a strong
  classifier does); ties by the reading closest to chance, then the higher verification. With no such point,
  the reading closest to chance among the points meeting the utility targets, then the highest verification,
  then the smallest strength. Only equal strengths are candidates unless `per_gender` (a per-gender strength can
  reach chance by pushing everyone onto one gender and makes the perturbation's size a gender cue).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

import numpy as np

from tools.san.augment import CAPTURE, capture_perturbed
from tools.san.aux_models import gender_cnn, predict
from tools.san.data import FaceSet, load_faces64, to_float
from tools.san.metrics import all_pairs, colour_difference, gender_scores, pair_distances, ssim, verification_accuracy
from tools.san.model_io import SanEnsemble, check_change
from tools.san.unseen import MATCH_THRESHOLD

GENDER_TARGET, VERIF_DROP_TARGET, SSIM_TARGET, ADAPTED_TARGET, CHANCE = 0.60, 0.03, 0.90, 0.70, 0.5
COLOUR_TARGET = 5.0   # mean Delta E*ab of the blurred faces: ~2 just-noticeable differences (a +10/255 brightening: 4)
COLOUR_PEAK_TARGET = 8.0   # mean of the faces' colour peaks (metrics.PEAK_PERCENTILE): ~3 just-noticeable differences
ALPHAS = {"residual": (0.0, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0),       # alpha 1 = X_OP itself
          "differential": (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5),       # the difference is small: larger strengths
          "label_free": (0.0, 0.25, 0.5, 0.6, 0.7, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)}  # alpha 1 = the trained output
OPINION_SEED, CAPTURE_SEED = 11, 3
Reader = Callable[[np.ndarray], np.ndarray]    # uint8 faces (N,H,W,3) -> 1 male / 0 female


@dataclass
class StrengthOutcomes:
    """Per-image unseen-model outputs of one member's X_OP at each strength on one dataset."""

    alphas: list[float]
    gender_pred: np.ndarray      # (A, N) 1 male / 0 female
    emb: np.ndarray              # (A, N, 128) dlib descriptors (NaN for images in no pair)
    ssim: np.ndarray             # (A, N) to the original
    colour: np.ndarray           # (A, N) mean Delta E to the original
    colour_peak: np.ndarray      # (A, N) the peak Delta E (metrics.ColourDifference.peak)

    def subset(self, keep: np.ndarray) -> StrengthOutcomes:
        """The outcomes of the images selected by boolean mask `keep` (as FaceSet.subset selects them)."""
        return StrengthOutcomes(self.alphas, self.gender_pred[:, keep], self.emb[:, keep], self.ssim[:, keep],
                                self.colour[:, keep], self.colour_peak[:, keep])


def sweep(ensemble: SanEnsemble, member: int, fs: FaceSet, evaluator, change: str = "differential",
          alphas=None, log=print, reader: Reader | None = None, matcher: bool = True) -> StrengthOutcomes:
    """The deployed output (change form `change`) of `member` at every strength in `alphas` (default:
    ALPHAS[change]), through `reader` (default: the unseen gender classifier) and the unseen matcher (left
    out, NaN, when not `matcher`)."""
    alphas = ALPHAS[check_change(change)] if alphas is None else alphas
    if 0.0 not in alphas:
        raise ValueError("the sweep needs alpha 0 (the originals) as its reference")
    reader = reader or evaluator.gender.predict
    preds, embs, ssims, colours, peaks = [], [], [], [], []
    for alpha in alphas:
        x_op = ensemble.deployed(fs.images, fs.gender, member, strength=float(alpha), change=change)
        preds.append(reader(x_op))
        embs.append(evaluator.embed(fs, x_op) if matcher else np.full((len(fs), 128), np.nan, np.float32))
        ssims.append(ssim(fs.images, x_op))
        colour = colour_difference(fs.images, x_op)
        colours.append(colour.mean)
        peaks.append(colour.peak)
        log(f"  strength {alpha:.2f}: gender bacc {gender_scores(preds[-1], fs.gender)['bacc']:.3f}")
    return StrengthOutcomes(list(map(float, alphas)), np.stack(preds), np.stack(embs), np.stack(ssims),
                            np.stack(colours), np.stack(peaks))


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
             "ssim": float(np.where(female, out.ssim[a_f], out.ssim[a_m]).mean()),
             "colour_de": float(np.where(female, out.colour[a_f], out.colour[a_m]).mean()),
             "colour_peak": float(np.where(female, out.colour_peak[a_f], out.colour_peak[a_m]).mean())}
    point["meets_targets"] = meets_targets(point)
    return point


def strength_of(point: dict, change: str) -> dict[str, float]:
    """The strength mapping stored with the model for a grid point: a label-free stage reads every face as
    'unknown', so the point's (equal) strength goes there too (SanEnsemble.one_strength)."""
    return {"female": point["female"], "male": point["male"],
            **({"unknown": point["female"]} if change == "label_free" else {})}


def from_chance(gender_bacc: float) -> float:
    """How far a gender reading is from chance, on either side (an inverted reading tells the gender as well as a
    right one)."""
    return abs(gender_bacc - CHANCE)


def private_enough(gender_bacc: float) -> bool:
    """The privacy target: a reading no further from chance than GENDER_TARGET on either side."""
    return from_chance(gender_bacc) <= GENDER_TARGET - CHANCE


def meets_targets(point: dict) -> bool:
    """A grid point meets the privacy target and the utility targets (verification drop, SSIM, colour)."""
    return private_enough(point["gender_bacc"]) and _useful(point)


def _useful(point: dict) -> bool:
    return (point["verif_drop"] <= VERIF_DROP_TARGET and point["ssim"] >= SSIM_TARGET
            and point["colour_de"] <= COLOUR_TARGET and point["colour_peak"] <= COLOUR_PEAK_TARGET)


def strength_grid(out: StrengthOutcomes, fs: FaceSet) -> list[dict]:
    """Every (alpha_female, alpha_male) combination of the sweep with its privacy and utility numbers."""
    zero = out.alphas.index(0.0)
    verif_orig = verification_accuracy(pair_distances(out.emb[zero], fs.pair_idx), fs.pair_same, MATCH_THRESHOLD)
    n = len(out.alphas)
    return [_point(out, fs, a_f, a_m, verif_orig) for a_f, a_m in product(range(n), range(n))]


def choose_operating_point(points: list[dict], per_gender: bool = False) -> dict:
    """The module's rule: the strongest point meeting the targets with a reading no further than the target from
    chance on either side (an inverted reading tells the gender too), else the reading closest to chance among
    the points meeting the utility targets; equal strengths only unless `per_gender`."""
    points = points if per_gender else [p for p in points if p["female"] == p["male"]]
    feasible = [p for p in points if p["meets_targets"]]
    if feasible:
        return max(feasible, key=lambda p: (p["female"] + p["male"], -from_chance(p["gender_bacc"]), p["verif_acc"]))
    useful = [p for p in points if _useful(p)]
    if not useful:
        raise ValueError("no strength meets the utility target (alpha 0 always does: is the sweep empty?)")
    return min(useful, key=lambda p: (from_chance(p["gender_bacc"]), -p["verif_acc"], p["female"] + p["male"]))


def pareto_front(points: list[dict]) -> list[dict]:
    """Points no other point beats on both a gender bacc closer to chance and a higher verification accuracy."""
    def gap(p: dict) -> float:
        return from_chance(p["gender_bacc"])

    front = [p for p in points if not any(gap(q) <= gap(p) and q["verif_acc"] >= p["verif_acc"]
                                          and (gap(q), q["verif_acc"]) != (gap(p), p["verif_acc"]) for q in points)]
    return sorted(front, key=gap)


def worse_reading(clean: list[dict], captured: list[dict]) -> list[dict]:
    """The clean grid with each point's gender numbers replaced by the capture-perturbed reading where that one
    is further from chance (privacy must hold under both); `captured_gender_bacc` keeps the other reading."""
    out = []
    for a, b in zip(clean, captured, strict=True):
        worse = b if from_chance(b["gender_bacc"]) > from_chance(a["gender_bacc"]) else a
        point = {**a, **{k: worse[k] for k in ("gender_bacc", "gender_acc_female", "gender_acc_male")},
                 "clean_gender_bacc": a["gender_bacc"], "captured_gender_bacc": b["gender_bacc"]}
        point["meets_targets"] = meets_targets(point)
        out.append(point)
    return out


def with_verification_pairs(fs: FaceSet, seed: int = 0) -> FaceSet:
    """`fs` with its pairs replaced by every genuine pair among its images plus as many impostor pairs drawn
    at random (seeded): a balanced verification set for people whose official pairs are nearly all genuine."""
    pairs, genuine = all_pairs(fs.identity)
    impostors = np.random.default_rng(seed).choice(np.flatnonzero(~genuine), int(genuine.sum()), replace=False)
    keep = np.concatenate([np.flatnonzero(genuine), np.sort(impostors)])
    return replace(fs, pair_idx=pairs[keep], pair_same=genuine[keep])


def opinion_reader(faces_dir: Path | None = None, epochs: int = 8, limit: int | None = None) -> Reader:
    """The second-opinion gender CNN used for the choice: trained on the fit people's original faces under
    flips and the capture changes (its own seed), never on SAN outputs; memoised on disk, so `keycam san
    strength` and `keycam san eval` read with the same network."""
    fit = load_faces64("fit", faces_dir, limit)
    known = fit.gender >= 0
    model = gender_cnn(to_float(fit.images[known]), fit.gender[known], epochs=epochs, seed=OPINION_SEED,
                       augmentations=("flip", *CAPTURE), desc="second opinion")
    return lambda images: predict(model, to_float(images)).argmax(1)


def choose_on_validation(ensemble: SanEnsemble, member: int, change: str, evaluator, per_gender: bool = False,
                         faces_dir: Path | None = None, opinion_epochs: int = 8, limit: int | None = None,
                         log=print) -> dict:
    """The operating point by the module's rule on the validation people (module doc); returns the record
    stored with the model (`strength_selection`) and reported by `eval`."""
    val = with_verification_pairs(load_faces64("validation", faces_dir, limit))
    log(f"choosing the operating point on the validation people: {len(val)} faces of "
        f"{len(np.unique(val.identity))} LFW train people, {len(val.pair_idx)} verification pairs")
    reader = opinion_reader(faces_dir, opinion_epochs, None if limit is None else 4 * limit)
    clean = strength_grid(sweep(ensemble, member, val, evaluator, change, log=log, reader=reader), val)
    captured_val = replace(val, images=capture_perturbed(val.images, CAPTURE_SEED))
    captured = strength_grid(sweep(ensemble, member, captured_val, evaluator, change, log=log, reader=reader,
                                   matcher=False), captured_val)
    points = worse_reading(clean, captured)
    choice = choose_operating_point(points, per_gender)
    log(f"chosen: strength female {choice['female']:g} / male {choice['male']:g} (second-opinion gender bacc "
        f"{choice['gender_bacc']:.3f}, verification drop {100 * choice['verif_drop']:.1f} pts, SSIM {choice['ssim']:.3f}, "
        f"Delta E {choice['colour_de']:.1f}, peak {choice['colour_peak']:.1f})")
    return {"member": member, "change": change, "per_gender": per_gender, "choice": choice, "grid": points,
            "selection_split": "validation", "n_images": len(val), "n_people": int(len(np.unique(val.identity))),
            "n_pairs": int(len(val.pair_idx)),
            "reader": f"second-opinion gender CNN (tools.san.nets.ConvNet, {opinion_epochs} epochs on the fit people's "
                      "original faces with flips and capture changes, seed " + str(OPINION_SEED) + ")",
            "rule": "tools/san/strength.py: the strongest of the " + ("(alpha_female, alpha_male)" if per_gender
                    else "equal strengths") + " whose gender bacc (the worse of clean and capture-perturbed) is within "
                    "0.10 of 0.5 with verification drop <= 3 pts, SSIM >= 0.90, mean Delta E <= "
                    f"{COLOUR_TARGET:g} and mean peak Delta E <= {COLOUR_PEAK_TARGET:g}; else the bacc closest to 0.5 among "
                    "those meeting the utility targets"}
