"""`keycam san`: train / eval / export the semi-adversarial gender-confounding networks (needs the train extra)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from tools.san.model_io import DEFAULT_MODEL

FACES_HELP = "folder with the LFW .npz files (default: $KEYCAM_FACES_DIR or ../shared/data/faces)"


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


@click.group()
def san() -> None:
    """Semi-adversarial networks: perturb faces so unseen gender classifiers fail but matchers still match."""


@san.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MODEL, show_default=True,
              help="where to write the ensemble weights")
@click.option("--faces-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=FACES_HELP)
@click.option("--members", type=int, default=3, show_default=True, help="ensemble size (diverse augmentations)")
@click.option("--epochs", type=int, default=5, show_default=True, help="semi-adversarial (stage 2) epochs")
@click.option("--pretrain-epochs", type=int, default=2, show_default=True, help="autoencoder (stage 1) epochs")
@click.option("--steps-per-epoch", type=int, default=80, show_default=True, help="batches per epoch")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="use only the first N images of each split (quick runs)")
def train(out: Path, faces_dir: Path | None, members: int, epochs: int, pretrain_epochs: int,
          steps_per_epoch: int, seed: int, limit: int | None) -> None:
    """Train auxiliary models and the SAN ensemble on the LFW train split, then save it."""
    _threads()
    from tools.san.model_io import save_ensemble
    from tools.san.train import TrainConfig, train_ensemble

    config = TrainConfig(members=members, epochs=epochs, pretrain_epochs=pretrain_epochs, seed=seed, limit=limit,
                         max_steps_per_epoch=steps_per_epoch)
    ensemble = train_ensemble(config, faces_dir, log=click.echo)
    save_ensemble(ensemble, out)
    click.echo(f"wrote {out} ({out.stat().st_size // 1024} KiB, {len(ensemble.members)} members, "
               f"{ensemble.meta['train_seconds']:.0f} s)")
