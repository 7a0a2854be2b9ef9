"""`keycam bench keyfrontier`: what a frame thief recovers vs what the sensor key's mixing costs (issue 15).

Each point is one key profile: a registered one (e.g. scatter4, stem) or a multiplexed sensor key given as
`mix<G>x<S>` (random groups of G scattered pixels mixed by secret condition-bounded 0/1 matrices, S rounds
of mixing + global permutation; the model undoes it in an int8 sparse first stage, then the stem network)
or `fold<G>x<S>` (the same key folded into the first conv, which becomes a float CSR layer). Per point and
dataset: keyed int8 accuracy, latency and size ratios against the unkeyed int8 model (`bench keyed`, side
by side in one process) and, per captured-frame count N, the frames-only attack's recognised rate and SSIM
next to a blank frame's SSIM. Writes a JSON and a plot (recognised vs latency ratio).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import click
import numpy as np

from base.cli import json_option
from base.errors import ConfigError
from hardware.digitise import key_and_digitise
from keys.generate import KeyConfig
from keys.profiles import PROFILES, Profile, get_profile
from tools.attacks.metrics import ssim
from tools.bench.common import Progress, write_json
from tools.bench.keyed import SHIPPED_MODELS, run_keyed_bench, shipped_model
from tools.datasets import load_dataset
from tools.ir import forward
from tools.keying.keyed import derive_keyset
from tools.onnx_import import load_onnx

FramesOnlyAttack = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(keyed 8-bit ADC frames (N, n) uint8, public plain frames (M, n) in [0, 1]) -> reconstructed frames (N, n)
in [0, 1]."""

_SPEC = re.compile(r"^(mix|fold)(\d+)x(\d+)(?:c([0-9.]+))?$")


def profile_from_spec(spec: str) -> Profile:
    """A registered profile, or `mix<G>x<S>[c<F>]` / `fold<G>x<S>[c<F>]` (F: condition factor, default 1.5)."""
    if spec in PROFILES:
        return get_profile(spec)
    m = _SPEC.match(spec)
    if m is None:
        raise ConfigError(f"unknown frontier point {spec!r}: a profile ({', '.join(sorted(PROFILES))}) or "
                          "mix<G>x<S> / fold<G>x<S> with G = 2**m - 1, e.g. mix15x1")
    kind, group, stages, factor = m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4) or 1.5)
    try:
        sensor = KeyConfig(scatter=group, mixing="multiplex", stages=stages, cond_factor=factor)
    except ValueError as exc:
        raise ConfigError(f"frontier point {spec!r}: {exc}") from exc
    return Profile(spec, False, sensor=sensor, sensor_stage=kind == "mix",
                   description=f"multiplexed groups of {group}, {stages} stage(s), "
                               f"{'int8 sensor stage' if kind == 'mix' else 'folded into conv1'}")


@dataclass(frozen=True)
class FramesOnly:
    """The frames-only attack at one captured-frame count."""
    frames: int
    recognised: float          # the plain model's accuracy on the reconstructions (chance 0.10)
    ssim: float
    ssim_blank: float          # SSIM of an all-zero frame against the same plain frames


@dataclass(frozen=True)
class FrontierPoint:
    """One profile on one dataset: cost against the unkeyed int8 model, and the attack per frame count."""
    dataset: str
    profile: str
    acc_float: float
    acc_int8_unkeyed: float
    acc_keyed_int8: float
    latency_ratio: float       # keyed int8 / unkeyed int8, median per frame, side by side
    size_ratio: float          # keyed int8 / unkeyed int8 file size
    frames_only: list[FramesOnly]


def frames_only_scores(dataset: str, prof: Profile, frame_counts: list[int], public: int, attack: FramesOnlyAttack,
                       secret: bytes) -> list[FramesOnly]:
    """Run the attack on N captured keyed frames (8-bit ADC) of the test set for each N, with `public`
    training images as the attacker's reference."""
    net = load_onnx(shipped_model(dataset))
    keyset = derive_keyset(secret, "frontier-device", "frontier-model", net, prof)
    test, labels = load_dataset(dataset, "test", limit=max(frame_counts))
    ref, _ = load_dataset(dataset, "train", limit=public)
    plain = test.reshape(len(test), -1) / 255.0
    shape = tuple(test.shape[-2:])
    keyed = key_and_digitise(keyset.sensor, plain)
    out = []
    for n in frame_counts:
        Progress("keyfrontier", f"{dataset} {prof.name}").step(f"frames-only attack, {n} frames")
        recon = np.clip(attack(keyed[:n], ref.reshape(len(ref), -1) / 255.0), 0.0, 1.0)
        out.append(FramesOnly(n, float(np.mean(forward(net, recon).argmax(1) == labels[:n])),
                              float(np.mean(ssim(recon, plain[:n], shape))),
                              float(np.mean(ssim(np.zeros_like(plain[:n]), plain[:n], shape)))))
    return out


def frontier_point(dataset: str, spec: str, frame_counts: list[int], limit: int | None, public: int,
                   attack: FramesOnlyAttack, secret: bytes) -> FrontierPoint:
    """Cost (`bench keyed` fields) and frames-only scores of one profile on one dataset."""
    prof = profile_from_spec(spec)
    Progress("keyfrontier", f"{dataset} {spec}").step("cost (bench keyed: keying, accuracy, latency, size)")
    r, _ = run_keyed_bench(dataset, prof, limit, progress=False)
    return FrontierPoint(dataset, spec, r["acc_float"], r["acc_int8_unkeyed"], r["acc_keyed_int8"],
                         r["latency_ratio"], r["size_ratio"],
                         frames_only_scores(dataset, prof, frame_counts, public, attack, secret))


def plot_frontier(points: list[FrontierPoint], path: str) -> None:
    """Recognised vs keyed int8 latency ratio, one marker per dataset and frame count, labelled by profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (dataset, n), marker in zip(sorted({(p.dataset, f.frames) for p in points for f in p.frames_only}),
                                    "osD^vP*X"):
        xs = [(p.latency_ratio, f.recognised, p.profile) for p in points if p.dataset == dataset
              for f in p.frames_only if f.frames == n]
        ax.scatter([x for x, _, _ in xs], [y for _, y, _ in xs], marker=marker, label=f"{dataset}, {n} frames")
        for x, y, name in xs:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.20, color="red", lw=0.8, ls="--", label="target <= 0.20")
    ax.axvline(2.0, color="grey", lw=0.8, ls=":", label="latency target <= 2x")
    ax.axhline(0.10, color="black", lw=0.5, ls=":", label="chance")
    ax.set_xlabel("keyed int8 latency / unkeyed int8 latency")
    ax.set_ylabel("frames-only attack: recognised")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_attack() -> FramesOnlyAttack:
    """The project's frames-only attack (`tools.attacks.frames_only.attack_frames`, all its starts)."""
    try:
        from tools.attacks.frames_only import attack_frames
    except ImportError as exc:
        raise ConfigError(f"the frames-only attack is not available ({exc})") from exc
    return lambda keyed, public: attack_frames(keyed, public)[0]


def run_frontier(datasets: list[str], specs: list[str], frame_counts: list[int], limit: int | None, public: int,
                 attack: FramesOnlyAttack, seed: str = "keyfrontier") -> list[FrontierPoint]:
    """Every profile on every dataset (attack keys derived from `seed`, so a run can be repeated)."""
    for spec in specs:
        profile_from_spec(spec)                          # every bad spec fails before hours of work
    secret = hashlib.sha256(f"keyfrontier/{seed}".encode()).digest()
    return [frontier_point(d, s, sorted(frame_counts), limit, public, attack, secret) for d in datasets for s in specs]


@click.command()
@click.option("--dataset", "datasets", multiple=True, type=click.Choice(sorted(SHIPPED_MODELS)),
              default=("mnist", "fashion"), show_default=True)
@click.option("--point", "specs", multiple=True, default=("scatter4", "mix7x1", "mix15x1", "mix31x1", "mix15x2"),
              show_default=True, help="A profile name, or mix<G>x<S> / fold<G>x<S> (G = 2**m - 1, S stages).")
@click.option("--frames", "frame_counts", multiple=True, type=click.IntRange(100), default=(1000, 10000),
              show_default=True, help="Captured keyed frames the attacker holds.")
@click.option("--limit", type=click.IntRange(1), default=2000, show_default=True,
              help="Test frames for the accuracy and latency side of each point.")
@click.option("--public", type=click.IntRange(100), default=10000, show_default=True,
              help="Public training images the attacker correlates against.")
@json_option("json_path", required=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="PNG: recognised vs latency.")
def keyfrontier(datasets, specs, frame_counts, limit, public, json_path, plot_path) -> None:
    """Frames-only recognition vs latency and size of each sensor-key profile.

    \b
    Example:
      keycam bench keyfrontier --point mix15 --point mix7x1 --frames 1000 --json frontier.json
    """
    points = run_frontier(list(datasets), list(specs), list(frame_counts), limit, public, default_attack())
    for p in points:
        attacks = ", ".join(f"N={f.frames}: {f.recognised:.2f} / SSIM {f.ssim:.2f} (blank {f.ssim_blank:.2f})"
                            for f in p.frames_only)
        click.echo(f"{p.dataset:8} {p.profile:10} keyed int8 {p.acc_keyed_int8:.4f} (float {p.acc_float:.4f}) "
                   f"latency {p.latency_ratio:.2f}x size {p.size_ratio:.2f}x | {attacks}")
    write_json(json_path, {"points": [asdict(p) for p in points], "limit": limit, "public": public})
    if plot_path:
        plot_frontier(points, plot_path)
        click.echo(f"wrote {plot_path}")
