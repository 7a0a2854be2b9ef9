"""Figures and the text table of a SAN evaluation: PNG montage, privacy-utility plot, markdown table."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.san.data import FaceSet
from tools.san.evaluate import GENDER_TARGET, VERIF_DROP_TARGET


def montage(faces: FaceSet, outputs: list[tuple[np.ndarray, np.ndarray]], selected: int, path: Path,
            per_group: int = 4, seed: int = 0) -> None:
    """Rows: a few test people of each gender; columns: original, X_SM and X_OP of the selected member, X_OP of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(faces.gender == g), min(per_group, int((faces.gender == g).sum())),
                                      replace=False) for g in (0, 1)])
    others = [m for m in range(len(outputs)) if m != selected]
    columns = [("original", faces.images), (f"X_SM #{selected}", outputs[selected][0]),
               (f"X_OP #{selected}", outputs[selected][1])] + [(f"X_OP #{m}", outputs[m][1]) for m in others]
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


def privacy_utility_plot(report: dict, path: Path) -> None:
    """Left: unseen gender balanced accuracy vs unseen verification accuracy (target box shaded);
    right: gender balanced accuracy vs SSIM for every member's X_SM / X_OP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g64, v112 = report["datasets"]["lfw64_test"]["variants"], report["datasets"]["lfw112_pairs"]["variants"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    orig_verif = v112["orig"]["verif_acc"]
    left.axvspan(0.4, GENDER_TARGET, ymin=0, ymax=1, color="tab:green", alpha=0.08)
    left.axhline(orig_verif - VERIF_DROP_TARGET, color="tab:green", ls="--", lw=1, label="target: verif drop <= 3 pts")
    left.axvline(GENDER_TARGET, color="tab:green", ls=":", lw=1, label="target: gender bacc <= 0.60")
    for name, marker in (("orig", "o"), ("ensemble_btas_op", "*"), ("ensemble_random_op", "s")):
        left.scatter(g64[name]["gender_bacc"], v112[name]["verif_acc"], marker=marker, s=90, label=name)
    for name in v112:
        if name.startswith("member") and "verif_acc" in v112[name] and name != f"member{report['selected_member']}_op":
            left.scatter(g64[name]["gender_bacc"], v112[name]["verif_acc"], marker="x", label=name)
    left.set_xlabel("unseen gender classifier balanced acc (LFW 64 test)  [privacy: lower is better]")
    left.set_ylabel("unseen matcher verification acc (LFW View-2 folds 1-2)")
    left.set_xlim(0.4, 1.0)
    left.legend(fontsize=7)
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
            "verif_acc_male", "tmr_fmr1e-2", "ssim", "psnr"]
    lines = []
    for name, data in report["datasets"].items():
        lines.append(f"\n{name} ({data['n_images']} images, {data['n_pairs']} official pairs)\n")
        lines.append("| variant | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for variant, values in data["variants"].items():
            cells = [f"{values[c]:.3f}" if c in values else "-" for c in cols]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
