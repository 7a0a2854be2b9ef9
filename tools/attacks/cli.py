"""`keycam attack`: structure, plaintext, inversion, reuse, model-file, support-only, frames-only, all."""
from __future__ import annotations

from pathlib import Path

import click

from base.cli import JSON_STDOUT, KeycamGroup, emit_json, json_option
from keys.profiles import DEFAULT_PROFILE
from tools.bench.keyed import SHIPPED_MODELS

_dataset = click.option("--dataset", type=click.Choice(sorted(SHIPPED_MODELS)), default="mnist", show_default=True)
_limit = click.option("--limit", type=click.IntRange(10), default=500, show_default=True,
                      help="Test frames to attack and score.")
_json = json_option("json_path")
_frames = click.option("--frames", "frames", default="1000,10000", show_default=True,
                       callback=lambda ctx, param, value: _counts(value),
                       help="Comma-separated numbers of captured keyed frames (test split) for the frames-only "
                       "attack (the largest also feeds support-only's unmix step).")
_profile = click.option("--profile", default=DEFAULT_PROFILE, show_default=True, help="Key profile to attack.")


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated frame counts, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"expected positive frame counts, got {text!r}")
    return counts


@click.group(cls=KeycamGroup)
def attack() -> None:
    """Attacks on keyed models and frames (privacy evaluation)."""


def _single(name: str, dataset: str, profile: str, limit: int, json_path: str | None) -> None:
    from tools.attacks.suite import describe
    from tools.attacks.target import build_target
    describe(profile)
    target = build_target(dataset, profile, limit=limit)
    if name == "structure":
        from tools.attacks.structure import run_structure as fn
    elif name == "plaintext":
        from tools.attacks.plaintext import run_plaintext as fn
    elif name == "inversion":
        from tools.attacks.inversion import run_inversion as fn
    else:
        from tools.attacks.reuse import run_reuse as fn
    result, _ = fn(target)
    _deliver({"dataset": dataset, "profile": profile, name: result}, json_path)


def _deliver(report: dict, json_path: str | None) -> None:
    """A single attack's report: JSON on stdout, or where --json says."""
    emit_json(json_path or JSON_STDOUT, report)


def _command(name: str, doc: str):
    example = f"keycam attack {name} --dataset mnist --profile stem --limit 200 --json"
    @attack.command(name=name, help=f"{doc}\n\n\b\nExample:\n  {example}")
    @_dataset
    @_profile
    @_limit
    @_json
    def cmd(dataset: str, profile: str, limit: int, json_path: str | None) -> None:
        _single(name, dataset, profile, limit, json_path)
    return cmd


_command("structure", "Recover the pixel arrangement from the keyed .tflite's sparsity pattern.")
_command("plaintext", "Estimate the sensor key from known pairs and chosen probe frames.")
_command("inversion", "Train a decoder from keyed to plain frames (another key's pairs, and the same key's).")
_command("reuse", "The keyed model on plain / other-key frames, and fine-tuned on K labelled plain frames.")


def _from_suite(name: str, dataset: str, profile: str, limit: int, frames: tuple[int, ...] | None,
                json_path: str | None) -> None:
    """Run one attack of `keycam attack all`'s suite with its full budget."""
    from tools.attacks.suite import ATTACKS, Budget, describe
    from tools.attacks.target import build_target
    describe(profile)
    attack_ = next(a for a in ATTACKS if a.name == name)
    result, _ = attack_.run(build_target(dataset, profile, limit=limit), Budget(frames=frames) if frames else Budget())
    report = {"dataset": dataset, "profile": profile, name: result}
    _deliver(report, json_path)


@attack.command(name="model-file")
@_dataset
@_profile
@_limit
@_json
def model_file(dataset: str, profile: str, limit: int, json_path: str | None) -> None:
    """Recover the sensor key A0 from the keyed .tflite's values; decrypt frames with it.

    \b
    Example:
      keycam attack model-file --dataset fashion --profile mix15 --json
    """
    _from_suite("model_file", dataset, profile, limit, None, json_path)


@attack.command(name="support-only")
@_dataset
@_profile
@_limit
@click.option("--frames", type=click.IntRange(20), default=10000, show_default=True,
              help="Captured keyed frames (test split) for the unmix step.")
@_json
def support_only(dataset: str, profile: str, limit: int, frames: int, json_path: str | None) -> None:
    """Recover the pixel arrangement from the keyed .tflite's sparsity pattern alone, then unmix captured frames.

    \b
    Example:
      keycam attack support-only --dataset mnist --profile scatter4 --frames 1000 --json out.json
    """
    _from_suite("support_only", dataset, profile, limit, (frames,), json_path)


@attack.command(name="frames-only")
@_dataset
@_profile
@_frames
@click.option("--public", type=click.IntRange(100), default=None,
              help="Public training images the attacker correlates (default: the whole training split).")
@_json
def frames_only(dataset: str, profile: str, frames: tuple[int, ...], public: int | None, json_path: str | None) -> None:
    """Rebuild frames from N captured keyed frames and public images alone (no model): correlation graph matching.

    \b
    Example:
      keycam attack frames-only --dataset mnist --profile mix15 --frames 1000,10000 --json
    """
    from tools.attacks.frames_only import run_frames_only
    from tools.attacks.suite import describe
    from tools.attacks.target import build_target
    describe(profile)
    result, _ = run_frames_only(build_target(dataset, profile, limit=10), frames, public)
    report = {"dataset": dataset, "profile": profile, "frames_only": result}
    _deliver(report, json_path)


@attack.command(name="all")
@_dataset
@_limit
@json_option("json_path", required=True)
@click.option("--profiles", default=None, help="Comma-separated profiles (default: every profile with a pixel-level sensor key).")
@click.option("--png-dir", type=click.Path(file_okay=False), default=None,
              help="Where the montages go (default: next to the JSON file; with JSON on stdout: here).")
@_frames
@click.option("--fast", is_flag=True, help="Tiny budgets (smoke test; numbers are not meaningful).")
def all_(dataset: str, limit: int, json_path: str, profiles: str | None, png_dir: str | None,
         frames: tuple[int, ...], fast: bool) -> None:
    """Every attack against every key profile: the profile x attack table.

    \b
    Example:
      keycam attack all --dataset mnist --profiles stem,mix15 --limit 200 --json results/attacks.json
    """
    from tools.attacks.suite import Budget, all_profiles, print_report, run_all
    names = [p.strip() for p in profiles.split(",") if p.strip()] if profiles else all_profiles()
    report = run_all(dataset, names, limit, Path(png_dir) if png_dir else Path(json_path).resolve().parent,
                     Budget(fast, frames))
    print_report(report)
    emit_json(json_path, report)
