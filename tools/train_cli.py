"""`keycam train`: train a base model on MNIST or Fashion-MNIST and export ONNX."""
from __future__ import annotations

import time

import click

from base.errors import KeycamError


@click.command()
@click.option("--dataset", type=click.Choice(["mnist", "fashion"]), required=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="ONNX file to write.")
@click.option("--epochs", type=click.IntRange(1, 100), default=4, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N training images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Folder with the IDX .gz files.")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="PyTorch CPU threads.")
def train(dataset: str, out_path: str, epochs: int, limit: int | None, seed: int, data_dir: str | None,
          threads: int) -> None:
    """Train LeNet-with-average-pool and export it as ONNX (needs the `train` extra: PyTorch).

    \b
    Example:
      keycam train --dataset fashion --out model.onnx --epochs 3
    """
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise KeycamError("keycam train needs PyTorch: pip install -e '.[train]'") from exc
    from edge.labels import labels_for
    from tools.train import export_onnx, train_lenet
    start = time.perf_counter()
    model, acc = train_lenet(dataset, epochs=epochs, limit=limit, seed=seed, data_dir=data_dir, threads=threads)
    export_onnx(model, out_path, (1, 28, 28), meta={"dataset": dataset, "labels": list(labels_for(dataset))})
    click.echo(f"{dataset}: test accuracy {acc:.4f} after {epochs} epochs "
               f"({time.perf_counter() - start:.0f} s); wrote {out_path}")
