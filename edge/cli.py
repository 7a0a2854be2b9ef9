"""The `keycam` command: one click group whose subcommands are imported only when used.

Lazy loading keeps the device side free of host-only imports: `keycam run` never imports tools/.
"""
from __future__ import annotations

import errno
import importlib
import logging
import sys

import click

from edge.atomic import write_error
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
        except OSError as exc:           # a write outside edge.atomic that hit a full disk: still one line
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise click.ClickException(str(write_error(exc.filename or "a file", exc))) from exc


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def level_from(name: str, verbose: int, quiet: int) -> int:
    """The logging level from --log-level, moved down one step per -v and up one per -q."""
    index = LOG_LEVELS.index(name) - verbose + quiet
    return getattr(logging, LOG_LEVELS[max(0, min(index, len(LOG_LEVELS) - 1))].upper())


def configure_logging(level: int) -> None:
    """Send every command's log records to stderr at `level` (replacing an earlier setup)."""
    logging.basicConfig(stream=sys.stderr, format=LOG_FORMAT, level=level, force=True)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="keycam")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="warning", show_default=True,
              envvar="KEYCAM_LOG_LEVEL", help="log records on stderr from this level up (env KEYCAM_LOG_LEVEL)")
@click.option("-v", "--verbose", count=True, help="one level more log output per -v (-v info, -vv debug)")
@click.option("-q", "--quiet", count=True, help="one level less log output per -q (-q errors only)")
def cli(log_level: str, verbose: int, quiet: int) -> None:
    """keycam: a privacy-preserving camera. Only predictions leave the device.

    Logging options go before the command, e.g. `keycam -v run --config device.yaml`.
    Shell completion: eval "$(_KEYCAM_COMPLETE=bash_source keycam)" (zsh_source, fish_source).
    """
    configure_logging(level_from(log_level, verbose, quiet))


def main() -> None:
    """Console-script entry point."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
