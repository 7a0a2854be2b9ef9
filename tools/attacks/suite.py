"""Run every attack against every key profile: one table profile x attack, JSON, PNG montages."""
from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from edge.runtime import TFLiteModel
from tools.attacks.metrics import similarity
from tools.attacks.plaintext import run_plaintext
from tools.attacks.structure import run_structure
from tools.attacks.target import build_target
from tools.bench.common import latency_ms
from tools.keying.profiles import DEFAULT_PROFILE, PROFILES, get_profile
from tools.montage import save_montage

MONTAGE_FRAMES = 8


def _u8(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.round(np.clip(np.asarray(x, dtype=np.float64).reshape((-1,) + shape), 0, 1) * 255).astype(np.uint8)


def attack_profile(dataset: str, profile: str, limit: int | None, fast: bool, progress) -> tuple[dict, dict]:
    """Every attack on one profile, plus the model's size, latency and accuracy."""
    from tools.attacks.inversion import run_inversion
    from tools.attacks.reuse import run_reuse
    target = build_target(dataset, profile, limit=limit, train_limit=300 if fast else 3000)
    out, figs = {}, {}
    steps = [("structure", lambda: run_structure(target)),
             ("plaintext", lambda: run_plaintext(target, pairs=(10, 100) if fast else (10, 100, 1000, 3000))),
             ("inversion", lambda: run_inversion(target, pairs=300 if fast else 3000, steps=30 if fast else 250)),
             ("reuse", lambda: run_reuse(target, ks=(10,) if fast else (10, 100, 1000), steps=5 if fast else 30))]
    for name, fn in steps:
        t0 = time.perf_counter()
        progress(f"  {profile}: {name} attack ...")
        out[name], figs[name] = fn()
        out[name]["seconds"] = round(time.perf_counter() - t0, 2)
    keyed = target.keyed(target.plain)
    out["size_bytes"] = len(target.tflite_int8)
    out["latency_ms"] = latency_ms({"keyed_int8": TFLiteModel(target.tflite_int8)}, {"keyed_int8": keyed},
                                   rounds=3, per_round=min(100, len(keyed)))["keyed_int8"]
    out["acc_keyed_int8"] = out["reuse"]["acc_keyed_int8"]
    out["ciphertext_ssim"] = similarity(keyed / 255.0, target.plain, target.shape)["ssim"]
    out["description"] = describe(profile)
    return out, figs


def all_profiles() -> list[str]:
    """Every profile with a pixel-level sensor key (patch-aligned ones need a patchify stem)."""
    return [name for name, p in PROFILES.items() if p.sensor_layout == "global"]


def describe(profile: str) -> str:
    """A profile's description; unknown names raise ConfigError listing the choices."""
    return get_profile(profile).description


def run_all(dataset: str, profiles: list[str], limit: int | None, png_dir: Path | None, fast: bool = False) -> dict:
    """The full report: {dataset, default_profile, profiles: {name: {...}}}."""
    progress = lambda msg: click.echo(msg, err=True)  # noqa: E731
    report = {"dataset": dataset, "default_profile": DEFAULT_PROFILE, "limit": limit, "profiles": {}}
    for profile in profiles:
        describe(profile)
        res, figs = attack_profile(dataset, profile, limit, fast, progress)
        if png_dir is not None:
            png_dir.mkdir(parents=True, exist_ok=True)
            res["figure"] = str(save_figure(figs, png_dir / f"attacks-{dataset}-{profile}.png"))
        report["profiles"][profile] = res
    return report


def save_figure(figs: dict[str, dict], path: Path) -> Path:
    """Rows: plain frames, keyed frames, the structure attack's reconstruction (then its unmixing bound,
    for mixing keys), and the plaintext and inversion reconstructions."""
    first = figs["structure"]
    shape = first["shape"]
    n = MONTAGE_FRAMES
    rows = [_u8(first["plain"][:n], shape), np.asarray(first["keyed"][:n]).reshape((-1,) + shape),
            _u8(first["recon"][:n], shape)]
    if "recon_adaptive" in first:
        rows.append(_u8(first["recon_adaptive"][:n], shape))
    rows += [_u8(figs[k]["recon"][:n], shape) for k in ("plaintext", "inversion") if "recon" in figs[k]]
    return save_montage(rows, path)


def table_rows(report: dict) -> list[tuple[str, ...]]:
    """One row per profile: attacker success next to cost and utility."""
    rows = [("profile", "pixels rec.", "struct SSIM/recog", "+unmix bound px/SSIM", "probes", "known-M SSIM", "inv SSIM other/same",
             "acc plain/other", "fine-tune/scratch", "size KB", "lat ms", "acc int8")]
    for name, r in report["profiles"].items():
        known = r["plaintext"]["known"]
        ft = r["reuse"]["fine_tune"]
        kmax = max(ft, key=int) if ft else None
        rows.append((
            name + (" *" if name == report["default_profile"] else ""),
            f"{r['structure']['pixels_recovered']:.3f}",
            f"{r['structure']['ssim']:.3f}/{r['structure']['recognised']:.2f}",
            _adaptive(r["structure"]),
            str(r["plaintext"]["frames_to_recover"]),
            f"{known[max(known, key=int)]['ssim']:.3f}@{max(known, key=int)}",
            f"{r['inversion']['other_key']['ssim']:.2f}/{r['inversion']['same_key']['ssim']:.2f}",
            f"{r['reuse']['acc_plain_frames']:.2f}/{r['reuse']['acc_other_key']:.2f}",
            f"{ft[kmax]['fine_tuned']:.2f}/{ft[kmax]['scratch']:.2f}@{kmax}" if kmax else "-",
            f"{r['size_bytes'] / 1024:.0f}", f"{r['latency_ms']:.3f}", f"{r['acc_keyed_int8']:.4f}"))
    return rows


def _adaptive(structure: dict) -> str:
    a = structure.get("adaptive")
    return f"{a['pixels_recovered']:.3f}/{a['ssim']:.3f}" if a else "-"


def print_report(report: dict) -> None:
    rows = table_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    click.echo(f"keycam attack all: {report['dataset']} (* = default profile)")
    for i, row in enumerate(rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))
    first = next(iter(report["profiles"].values()))
    prior = first["inversion"]["prior_only"]
    click.echo(f"reference without any attack: mean training frame SSIM {prior['ssim']:.3f}, blank frame SSIM "
               f"{prior['blank_ssim']:.3f}; recog = plain model's accuracy on the reconstructions; "
               f"unmix bound = the structure attack handed each mixing group's true positions")
