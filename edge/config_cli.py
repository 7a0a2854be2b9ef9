"""`keycam config check FILE` (and `keycam run --check`): validate a device config and its files
without running: the schema of every section, the model and its keycam metadata, the sensor key, and
that camera, key and model fit together (edge.preflight)."""
from __future__ import annotations

from pathlib import Path

import click


def check_device(path: str | Path) -> str:
    """Everything `keycam run` checks before its first frame; return a one-line summary or raise a
    KeycamError naming what is wrong."""
    from edge.config import load_config
    from edge.preflight import check_pairing
    from edge.service import Service
    from hardware.camera import make_camera
    cfg = load_config(path)
    ctx = Service(cfg).load_context()
    try:
        shape = make_camera(cfg.camera).frame_shape
        health = check_pairing(ctx, shape)
    finally:
        ctx.key_stage.close()
    state = "healthy" if health.ok else f"{health.reason}: {health.detail} (the service would fail closed and retry)"
    return (f"OK {path}: device {cfg.device_id}, model {ctx.policy.model_id}, key set "
            f"{ctx.policy.key_fingerprint[:16]}, frames {'x'.join(map(str, shape))}, "
            f"{cfg.key_stage.type} key stage{' aligning faces' if cfg.key_stage.align_faces else ''} {state}")


@click.group()
def config() -> None:
    """Device configs (the YAML `keycam run` reads)."""


@config.command()
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Validate FILE and the files it names without running (exit 1 with one line if anything is wrong).

    Example: keycam config check examples/sim-device.yaml
    """
    click.echo(check_device(file))
