"""Figures and the text table of a SAN evaluation: PNG montage, privacy-utility plot, markdown table."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.san.data import FaceSet
from tools.san.evaluate import GENDER_TARGET, VERIF_DROP_TARGET


def montage(faces: FaceSet, outputs: list[tuple[np.ndarray, np.ndarray]], selected: int, path: Path,
            deployed: tuple[str, np.ndarray] | None = None, per_group: int = 4, seed: int = 0) -> None:
    """Rows: a few test people of each gender; columns: original, the deployed output (title, images) when given,
    X_SM and X_OP of the selected member, X_OP of the others (no member columns when `outputs` is empty: a
    label-free model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(faces.gender == g), min(per_group, int((faces.gender == g).sum())),
                                      replace=False) for g in (0, 1)])
    others = [m for m in range(len(outputs)) if m != selected]
    members = [(f"X_SM #{selected}", outputs[selected][0]), (f"X_OP #{selected}", outputs[selected][1])] + [
               (f"X_OP #{m}", outputs[m][1]) for m in others] if outputs else []
    columns = [("original", faces.images)] + ([deployed] if deployed is not None else []) + members
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.6 * len(columns), 1.6 * len(rows)), squeeze=False)
    for r, idx in enumerate(rows):
        for c, (title, images) in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(images[idx])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel("female" if faces.gender[idx] == 0 else "male", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _strength_panel(ax, report: dict) -> None:
    """The strength sweep on lfw64_test: every (alpha_female, alpha_male) point, the equal-strength curve,
    the Pareto front and the stored operating point."""
    st = report["strength"]
    grid = st["grid"]
    ax.scatter([p["gender_bacc"] for p in grid], [p["verif_acc"] for p in grid], s=8, color="0.7",
               label="(alpha_f, alpha_m) grid")
    same = sorted((p for p in grid if p["female"] == p["male"]), key=lambda p: p["female"])
    ax.plot([p["gender_bacc"] for p in same], [p["verif_acc"] for p in same], "o-", ms=3, label="alpha_f = alpha_m")
    for p in same:
        ax.annotate(f"{p['female']:.2g}", (p["gender_bacc"], p["verif_acc"]), fontsize=6)
    front = st["pareto"]
    ax.scatter([p["gender_bacc"] for p in front], [p["verif_acc"] for p in front], s=18, facecolors="none",
               edgecolors="tab:red", label="Pareto front (|bacc - 0.5|, verif)")
    chosen = next(p for p in grid if p["female"] == st["stored"]["female"] and p["male"] == st["stored"]["male"])
    ax.scatter(chosen["gender_bacc"], chosen["verif_acc"], marker="*", s=160, color="tab:green", zorder=3,
               label=f"stored point f={chosen['female']:.2g} m={chosen['male']:.2g}")
    orig = next(p for p in grid if p["female"] == 0 and p["male"] == 0)["verif_acc"]
    ax.axhline(orig - VERIF_DROP_TARGET, color="tab:green", ls="--", lw=1)
    ax.axvline(GENDER_TARGET, color="tab:green", ls=":", lw=1)
    ax.set_xlabel("unseen gender balanced acc (LFW 64 test)")
    ax.set_ylabel("unseen verification acc (LFW 64 test pairs)")
    ax.set_title("strength sweep on the test people (the curve; chosen on validation)", fontsize=9)
    ax.legend(fontsize=6)


def privacy_utility_plot(report: dict, path: Path) -> None:
    """Left: unseen gender balanced accuracy vs unseen verification accuracy (target box shaded);
    middle: the strength sweep on the selection split; right: gender balanced accuracy vs SSIM for every
    member's X_SM / X_OP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g64, v112 = report["datasets"]["lfw64_test"]["variants"], report["datasets"]["lfw112_pairs"]["variants"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.4))
    orig_verif = v112["orig"]["verif_acc"]
    left.axvspan(0.4, GENDER_TARGET, ymin=0, ymax=1, color="tab:green", alpha=0.08)
    left.axhline(orig_verif - VERIF_DROP_TARGET, color="tab:green", ls="--", lw=1, label="target: verif drop <= 3 pts")
    left.axvline(GENDER_TARGET, color="tab:green", ls=":", lw=1, label="target: gender bacc <= 0.60")
    for name, marker in (("orig", "o"), ("ensemble_btas_op", "*"), ("ensemble_random_op", "s"),
                         ("operating_point_op", "P")):
        if name not in g64:             # a label-free model has no ensemble rows
            continue
        left.scatter(g64[name]["gender_bacc"], v112[name]["verif_acc"], marker=marker, s=90, label=name)
    for name in v112:
        if name.startswith("member") and "verif_acc" in v112[name] and name != f"member{report['selected_member']}_op":
            left.scatter(g64[name]["gender_bacc"], v112[name]["verif_acc"], marker="x", label=name)
    left.set_xlabel("unseen gender balanced acc (LFW 64 test)  [0.5 = chance: most private]")
    left.set_ylabel("unseen matcher verification acc (LFW View-2 folds 1-2)")
    left.set_xlim(0.3, 1.0)
    left.legend(fontsize=7)
    _strength_panel(middle, report)
    for name, v in g64.items():
        if "ssim" in v and not name.startswith("ensemble"):
            right.scatter(v["gender_bacc"], v["ssim"], marker="^" if name.endswith("_sm") else "v")
            right.annotate(name, (v["gender_bacc"], v["ssim"]), fontsize=7)
    right.axvline(GENDER_TARGET, color="tab:green", ls=":", lw=1)
    right.set_xlabel("unseen gender balanced acc (LFW 64 test)")
    right.set_ylabel("SSIM to the original")
    fig.suptitle("SAN ensemble: privacy vs utility on unseen models", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(report: dict) -> str:
    """The closing-note table: per dataset and variant, unseen gender / matcher numbers and fidelity."""
    cols = ["gender_acc", "gender_bacc", "gender_acc_female", "gender_acc_male", "verif_acc", "verif_acc_female",
            "verif_acc_male", "tmr_fmr1e-2", "tmr_fmr1e-2_female", "tmr_fmr1e-2_male", "ssim", "ssim_female",
            "ssim_male", "colour_de", "colour_peak", "psnr"]
    lines = []
    for name, data in report["datasets"].items():
        lines.append(f"\n{name} ({data['n_images']} images, {data['n_pairs']} official pairs)\n")
        lines.append("| variant | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for variant, values in data["variants"].items():
            cells = [f"{values[c]:.3f}" if c in values else "-" for c in cols]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    st = report.get("strength")
    if st:
        keys = ["female", "male", "gender_bacc", "gender_acc_female", "gender_acc_male", "verif_acc", "verif_drop",
                "ssim", "colour_de", "colour_peak", "meets_targets"]
        equal = sorted((p for p in st["grid"] if p["female"] == p["male"]), key=lambda p: p["female"])
        for title, points in (("equal strengths", equal), ("Pareto front over per-gender strengths", st["pareto"])):
            lines += _rows(f"strength sweep of member {report['selected_member']} on lfw64_test, {st['change']} "
                           f"change, {title} (stored operating point female {st['stored']['female']:g}, male "
                           f"{st['stored']['male']:g})", keys, points)
        keys = ["female", "male", "gender_bacc", "clean_gender_bacc", "captured_gender_bacc", "verif_acc",
                "verif_drop", "ssim", "colour_de", "colour_peak", "meets_targets"]
        lines += _rows(f"the choice: validation people, second-opinion classifier (clean / capture-perturbed), "
                       f"dlib matcher; rule choice female {st['rule_choice']['female']:g}, male "
                       f"{st['rule_choice']['male']:g}", keys,
                       sorted((p for p in st["selection_grid"] if p["female"] == p["male"]), key=lambda p: p["female"]))
        if st.get("cross_fold"):
            keys = ["selected_on_fold", "reported_on_fold", "female", "male", "gender_bacc", "gender_acc_female",
                    "gender_acc_male", "verif_acc_orig", "verif_acc", "verif_drop", "tmr_fmr1e-2_orig", "tmr_fmr1e-2"]
            lines += _rows("cross-fold check: strength chosen on one View-2 fold's people, reported on the other's "
                           "(gender: 64x64 images; verification: 112x112 official pairs)", keys, st["cross_fold"])
    if report.get("second_opinion"):
        rows = [{"classifier": name, "images": what, **scores} for name, by in report["second_opinion"].items()
                for what, scores in by.items()]
        lines += _rows("second-opinion gender readers trained here on LFW train (independent: originals; adapted: "
                       "the deployed outputs; *_probe: logistic regression on the unseen matcher's descriptors), on "
                       "the 64x64 test people", ["classifier", "images", "acc",
                                                                                  "bacc", "acc_female", "acc_male"],
                       rows)
    heads = ["gender_bacc_orig", "gender_bacc_op", "gender_bacc_orig_perturbed", "gender_bacc_op_perturbed",
             "gender_bacc_independent", "gender_bacc_adapted", "gender_bacc_probe_orig", "gender_bacc_adapted_probe",
             "verif_acc_orig", "verif_acc_op", "ssim_op", "colour_de_op", "colour_peak_op"]
    lines += _rows("headline (deployed = the stored operating point; chosen on: "
                   f"{report.get('operating_point_chosen_on', '?')})", heads, [report])
    return "\n".join(lines)


def _rows(title: str, keys: list[str], points: list[dict]) -> list[str]:
    """A titled markdown table of `keys` for each point (floats to 3 decimals; '-' where a point, e.g. one stored
    before that field existed, lacks it)."""
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else "-" if value is None else str(value)

    lines = [f"\n{title}\n", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    return lines + ["| " + " | ".join(cell(p.get(k)) for k in keys) + " |" for p in points]
