"""The `keycam` command: one click group whose subcommands are imported only when used.

Lazy loading keeps the device side free of host-only imports: `keycam run` never imports tools/.
"""
from __future__ import annotations

import sys

import click

from base.cli import LOG_LEVELS, LazyGroup, configure_logging, level_from

# name -> ("module:attribute", one-line help); each module owns its own click command or group.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("edge.service_cli:run", "Run the device service from a device YAML config."),
    "config": ("edge.config_cli:config", "Check a device YAML config and its files without running."),
    "demo": ("tools.demo:demo", "Key the shipped model and classify the shipped sample frames."),
    "train": ("tools.train_cli:train", "Train a base model and export ONNX (needs the train extra)."),
    "bench": ("tools.bench_cli:bench", "Benchmarks: keyed models, sensor, pipeline, ..."),
    "keys": ("keycam.keys_cli:keys", "Provision, rotate, revoke and inspect device keys (vault)."),
    "deploy": ("keycam.deploy_cli:deploy", "Build, verify and push signed bundles to devices."),
    "hw": ("hardware.cli:hw", "Hardware: faceplate actuator, emulator, camera."),
    "san": ("tools.san.cli:san", "Semi-adversarial networks: train, evaluate, export."),
    "attack": ("tools.attacks.cli:attack", "Privacy attacks against key profiles."),
}


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
