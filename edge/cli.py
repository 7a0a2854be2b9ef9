"""The `keycam` command: one click group whose subcommands are imported only when used.

Lazy loading keeps the device side free of host-only imports: `keycam run` never imports tools/.
"""
from __future__ import annotations

import importlib
import sys

import click

from edge.errors import KeycamError

# name -> ("module:attribute", one-line help); each module owns its own click command or group.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("edge.service_cli:run", "Run the device service from a device YAML config."),
    "config": ("edge.config_cli:config", "Check a device YAML config and its files without running."),
    "demo": ("tools.demo:demo", "Key the shipped model and classify the shipped sample frames."),
    "train": ("tools.train_cli:train", "Train a base model and export ONNX (needs the train extra)."),
    "bench": ("tools.bench_cli:bench", "Benchmarks: keyed models, sensor, pipeline, ..."),
    "keys": ("keys.cli:keys", "Provision, rotate, revoke and inspect device keys (vault)."),
    "deploy": ("deploy.cli:deploy", "Build, verify and push signed bundles to devices."),
    "hw": ("hardware.cli:hw", "Hardware: faceplate actuator, emulator, camera."),
    "san": ("tools.san.cli:san", "Semi-adversarial networks: train, evaluate, export."),
    "attack": ("tools.attacks.cli:attack", "Privacy attacks against key profiles."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name][0].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                raise click.ClickException(
                    f"'keycam {name}' is not available: module {exc.name!r} is missing "
                    "(install the matching extra, see README)") from exc
            return getattr(module, attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List subcommands from the static table, without importing them."""
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeycamError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="keycam")
def cli() -> None:
    """keycam: a privacy-preserving camera. Only predictions leave the device."""


def main() -> None:
    """Console-script entry point."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
