"""Run every attack against every key profile: one table profile x attack, JSON, PNG montages."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from edge.runtime import TFLiteModel
from hardware.preadc import adc
from keys.profiles import DEFAULT_PROFILE, PROFILES, get_profile
from tools.attacks.frames_only import DEFAULT_FRAMES, FAST_STARTS, Starts, run_frames_only
from tools.attacks.metrics import similarity
from tools.attacks.plaintext import run_plaintext
from tools.attacks.reuse import deployed_accuracies, run_reuse
from tools.attacks.structure import run_structure
from tools.attacks.target import AttackError, Target, build_target
from tools.bench.common import latency_ms
from tools.montage import save_montage

MONTAGE_FRAMES = 8


def _u8(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return adc(np.asarray(x).reshape((-1,) + shape))


@dataclass(frozen=True)
class Budget:
    """How hard each attack tries: `fast` for smoke tests, `frames` captured keyed frames (test split)."""
    fast: bool = False
    frames: tuple[int, ...] = DEFAULT_FRAMES

    def captured(self, target: Target) -> np.ndarray:
        """The victim's keyed frames an attacker captured: the first max(frames) test frames."""
        return target.keyed(target.test_frames(max(self.frames))[0])


@dataclass(frozen=True)
class Attack:
    """One attack of the suite: its JSON key and how it runs on a target within a budget."""
    name: str
    run: Callable[[Target, Budget], tuple[dict, dict]]


def _inversion(target: Target, budget: Budget) -> tuple[dict, dict]:
    from tools.attacks.inversion import run_inversion
    return run_inversion(target, pairs=300 if budget.fast else 3000, steps=30 if budget.fast else 250)


def _reuse(target: Target, budget: Budget) -> tuple[dict, dict]:
    return run_reuse(target, ks=(10,) if budget.fast else (10, 100, 1000), steps=5 if budget.fast else 30)


def _model_file(target: Target, budget: Budget) -> tuple[dict, dict]:
    from tools.attacks.model_file import run_model_file
    return run_model_file(target)


def _support_only(target: Target, budget: Budget) -> tuple[dict, dict]:
    from tools.attacks.support_only import run_support_only
    return run_support_only(target, budget.captured(target))


def _frames_only(target: Target, budget: Budget) -> tuple[dict, dict]:
    return run_frames_only(target, budget.frames, public=3000 if budget.fast else None,
                           starts=FAST_STARTS if budget.fast else Starts())


ATTACKS: tuple[Attack, ...] = (
    Attack("structure", lambda target, budget: run_structure(target)),
    Attack("plaintext", lambda target, budget: run_plaintext(
        target, pairs=(10, 100) if budget.fast else (10, 100, 1000, 3000))),
    Attack("inversion", _inversion),
    Attack("reuse", _reuse),
    Attack("model_file", _model_file),
    Attack("support_only", _support_only),
    Attack("frames_only", _frames_only),
)


def attack_profile(dataset: str, profile: str, limit: int | None, budget: Budget, progress: Callable[[str], None],
                   attacks: tuple[Attack, ...] = ATTACKS) -> tuple[dict, dict]:
    """Every attack on one profile, plus the model's size, latency and accuracy. An attack that does not
    apply to the profile (AttackError) is reported with its reason instead of a result."""
    target = build_target(dataset, profile, limit=limit, train_limit=300 if budget.fast else 3000)
    out, figs = {}, {}
    for attack in attacks:
        t0 = time.perf_counter()
        progress(f"  {profile}: {attack.name.replace('_', '-')} attack ...")
        try:
            out[attack.name], figs[attack.name] = attack.run(target, budget)
        except AttackError as exc:
            progress(f"  {profile}: {attack.name.replace('_', '-')} attack does not apply: {exc}")
            out[attack.name], figs[attack.name] = {"error": str(exc)}, {}
        out[attack.name]["seconds"] = round(time.perf_counter() - t0, 2)
    keyed = target.keyed(target.plain)
    out["size_bytes"] = len(target.tflite_int8)
    out["latency_ms"] = latency_ms({"keyed_int8": TFLiteModel(target.tflite_int8)}, {"keyed_int8": keyed},
                                   rounds=3, per_round=min(100, len(keyed)))["keyed_int8"]
    reuse = out.get("reuse", {})
    out["acc_keyed_int8"] = (reuse["acc_keyed_int8"] if "acc_keyed_int8" in reuse
                             else deployed_accuracies(target)["acc_keyed_int8"])
    out["ciphertext_ssim"] = similarity(keyed / 255.0, target.plain, target.shape)["ssim"]
    out["description"] = describe(profile)
    return out, figs


def all_profiles() -> list[str]:
    """Every profile with a pixel-level sensor key (patch-aligned ones need a patchify stem)."""
    return [name for name, p in PROFILES.items() if p.sensor_layout == "global"]


def describe(profile: str) -> str:
    """A profile's description; unknown names raise ConfigError listing the choices."""
    return get_profile(profile).description


def run_all(dataset: str, profiles: list[str], limit: int | None, png_dir: Path | None, budget: Budget = Budget(),
            attacks: tuple[Attack, ...] | None = None) -> dict:
    """The full report: {dataset, default_profile, limit, frames, profiles: {name: {attack: result, ...}}};
    every attack of ATTACKS unless `attacks` names others."""
    progress = lambda msg: click.echo(msg, err=True)  # noqa: E731
    report = {"dataset": dataset, "default_profile": DEFAULT_PROFILE, "limit": limit, "frames": list(budget.frames),
              "profiles": {}}
    for profile in profiles:
        describe(profile)
    for profile in profiles:
        res, figs = attack_profile(dataset, profile, limit, budget, progress, attacks or ATTACKS)
        if png_dir is not None:
            png_dir.mkdir(parents=True, exist_ok=True)
            res["figure"] = str(save_figure(figs, png_dir / f"attacks-{dataset}-{profile}.png"))
        report["profiles"][profile] = res
    return report


def save_figure(figs: dict[str, dict], path: Path) -> Path:
    """Rows: plain frames, keyed frames, then every attack's reconstruction in the suite's order (the
    structure attack's unmixing bound after its own reconstruction, for mixing keys)."""
    shown = [f for f in figs.values() if "plain" in f and "shape" in f]
    if not shown:
        raise AttackError("no attack produced frames to show")
    shape, n = shown[0]["shape"], MONTAGE_FRAMES
    rows = [_u8(shown[0]["plain"][:n], shape), np.asarray(shown[0]["keyed"][:n]).reshape((-1,) + shape)]
    for f in figs.values():
        rows += [_u8(f[k][:n], shape) for k in ("recon", "recon_adaptive") if k in f]
    return save_montage(rows, path)


def _structure(r: dict) -> str:
    return f"{r['ssim']:.3f}/{r['recognised']:.2f}"


def _adaptive(r: dict) -> str:
    a = r.get("adaptive")
    return f"{a['pixels_recovered']:.3f}/{a['ssim']:.3f}" if a else "-"


def _known(r: dict) -> str:
    m = max(r["known"], key=int)
    return f"{r['known'][m]['ssim']:.3f}@{m}"


def _fine_tune(r: dict) -> str:
    ft = r["fine_tune"]
    if not ft:
        return "-"
    k = max(ft, key=int)
    return f"{ft[k]['fine_tuned']:.2f}/{ft[k]['scratch']:.2f}@{k}"


def _placed(r: dict) -> str:
    return f"{r['pixels_placed']:.3f}/{r['recognised']:.2f}"


def _frames(r: dict) -> str:
    return f"{r['recognised']:.2f}/{r['ssim']:.3f}@{r['frames']}"


# (header, attack whose result the cell shows, cell) per attack column
ATTACK_COLUMNS: tuple[tuple[str, str, Callable[[dict], str]], ...] = (
    ("pixels rec.", "structure", lambda r: f"{r['pixels_recovered']:.3f}"),
    ("struct SSIM/recog", "structure", _structure),
    ("+unmix bound px/SSIM", "structure", _adaptive),
    ("probes", "plaintext", lambda r: str(r["frames_to_recover"])),
    ("known-M SSIM", "plaintext", _known),
    ("inv SSIM other/same", "inversion", lambda r: f"{r['other_key']['ssim']:.2f}/{r['same_key']['ssim']:.2f}"),
    ("acc plain/other", "reuse", lambda r: f"{r['acc_plain_frames']:.2f}/{r['acc_other_key']:.2f}"),
    ("fine-tune/scratch", "reuse", _fine_tune),
    ("model-file px/recog", "model_file", _placed),
    ("support-only px/recog", "support_only", _placed),
    ("frames-only recog/SSIM@N", "frames_only", _frames),
)


def table_rows(report: dict) -> list[tuple[str, ...]]:
    """One row per profile: attacker success next to cost and utility (n/a: the attack does not apply)."""
    profiles = report["profiles"]
    ran = {name for r in profiles.values() for name in r}
    columns = [c for c in ATTACK_COLUMNS if c[1] in ran]
    rows = [("profile", *(c[0] for c in columns), "size KB", "lat ms", "acc int8")]
    for name, r in profiles.items():
        cells = [cell(r[attack]) if "error" not in r.get(attack, {"error": ""}) else "n/a"
                 for _, attack, cell in columns]
        rows.append((name + (" *" if name == report["default_profile"] else ""), *cells,
                     f"{r['size_bytes'] / 1024:.0f}", f"{r['latency_ms']:.3f}", f"{r['acc_keyed_int8']:.4f}"))
    return rows


def print_report(report: dict) -> None:
    rows = table_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    click.echo(f"keycam attack all: {report['dataset']} (* = default profile)")
    for i, row in enumerate(rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))
    first = next(iter(report["profiles"].values()))
    notes = ["recog = plain model's accuracy on the reconstructions",
             "unmix bound = the structure attack handed each mixing group's true positions",
             "px = fraction of keyed pixels placed exactly", "@N = captured keyed frames"]
    prior = first.get("inversion", {}).get("prior_only")
    if prior:
        notes.insert(0, f"mean training frame SSIM {prior['ssim']:.3f}, blank frame SSIM {prior['blank_ssim']:.3f}")
    elif "blank_ssim" in first.get("frames_only", {}):
        notes.insert(0, f"blank frame SSIM {first['frames_only']['blank_ssim']:.3f}")
    click.echo("reference without any attack: " + "; ".join(notes))
