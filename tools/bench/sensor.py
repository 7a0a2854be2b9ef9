"""`keycam bench sensor`: keyed-model accuracy versus sensor read noise and ADC resolution.

Every test frame goes through the simulated pre-ADC stage (hardware.preadc) with the device's sensor
key, for each (read noise, ADC bits) pair, and into the keyed int8 model (what ships) and the keyed
float model (no int8 quantisation: isolates the sensor). The unkeyed float model behind the same
simulated sensor, without a key, is the reference: the gap shows the SNR the key costs (the key's
gains, normalised so the ADC never clips, leave keyed frames a fraction of the full-scale range).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import click
import numpy as np

from base.cli import json_option
from base.errors import ConfigError
from edge.runtime import TFLiteModel
from hardware.digitise import model_input
from hardware.preadc import FiberOptics, PreADCStage, SensorModel
from keys.factors import Key
from keys.profiles import DEFAULT_PROFILE
from tools.bench.common import Progress, write_json
from tools.bench.keyed import SHIPPED_MODELS, shipped_model
from tools.datasets import load_dataset
from tools.keying.provision import build_keyed_model, default_calibration_frames, model_metadata
from tools.onnx_import import load_onnx
from tools.tflite.writer import write_tflite

MODELS = ("keyed_int8", "keyed_float", "unkeyed_float")


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what}: give at least one value")
    return values


def _accuracy(model: TFLiteModel, stage: PreADCStage, images: np.ndarray, labels: np.ndarray, bits: int) -> float:
    stage.reset()
    hits = 0
    for image, label in zip(images, labels):
        hits += int(np.argmax(model.invoke(model_input(stage(image), bits))) == label)
    return hits / len(images)


def run_sensor_bench(dataset: str, read_noise: list[float], bits: list[int], limit: int | None = 1000,
                     model_path: str | None = None, profile: str = DEFAULT_PROFILE, shot_noise: bool = False,
                     full_well: float = 10000.0, optics: bool = False, seed: int = 0,
                     progress: bool = True) -> dict:
    """Accuracy of the keyed int8/float and unkeyed float models on every (read noise, bits) cell."""
    start = time.perf_counter()
    model_path = model_path or shipped_model(dataset)
    if not Path(model_path).is_file():
        raise ConfigError(f"base model {model_path} not found (train one with `keycam train`)")
    images, labels = load_dataset(dataset, "test", limit=limit)
    plain = images.astype(np.float32) / np.float32(255)
    net = load_onnx(model_path)
    secret = hashlib.sha256(f"keycam-bench-sensor-{seed}".encode()).digest()
    show = Progress("sensor", f"{dataset} {profile}", progress)
    show.step("keying")
    prov = build_keyed_model(model_path, secret, "bench-sensor", profile,
                             calib_frames=default_calibration_frames(net))
    models = {"keyed_int8": TFLiteModel(prov.tflite_int8), "keyed_float": TFLiteModel(prov.tflite_float),
              "unkeyed_float": TFLiteModel(write_tflite(net, metadata=model_metadata(net, None, "unkeyed"))[0])}
    keys = {"keyed_int8": prov.keyset.sensor, "keyed_float": prov.keyset.sensor,
            "unkeyed_float": Key(prov.keyset.sensor.size, [], "identity")}
    fiber = FiberOptics() if optics else None
    cells = [(r, b) for b in bits for r in read_noise]
    results = []
    with show.bar(cells, f"read noise x ADC bits grid, {len(cells)} cells of {len(images)} frames "
                         f"x {len(MODELS)} models") as bar:
        for r, b in bar:
            model = SensorModel(read_noise=r, bits=b, shot_noise=shot_noise, full_well=full_well,
                                seed=seed, optics=fiber)
            row = {"read_noise": r, "read_noise_lsb8": r * 255, "read_noise_e": r * full_well, "bits": b}
            for name in MODELS:
                row[f"acc_{name}"] = _accuracy(models[name], PreADCStage(keys[name], model), plain, labels, b)
            results.append(row)
    sensor = prov.keyset.sensor
    signal = sensor.apply(plain.reshape(len(plain), -1).astype(np.float64)) - sensor.offset()
    return {"dataset": dataset, "model": str(model_path), "profile": profile, "n": int(len(images)),
            "seed": seed, "shot_noise": shot_noise, "full_well": full_well, "optics": fiber is not None,
            "read_noise": read_noise, "bits": bits, "results": results,
            "keyed_signal_fraction": float(signal.sum() / plain.sum()),
            "sensor_fingerprint": sensor.fingerprint, "elapsed_s": time.perf_counter() - start}


def print_grid(result: dict) -> None:
    """One row per read noise, one column per ADC depth: keyed int8 / keyed float / unkeyed float."""
    cell = {(r["read_noise"], r["bits"]): r for r in result["results"]}
    click.echo(f"keycam bench sensor: {result['dataset']}, profile {result['profile']}, {result['n']} frames, "
               f"shot noise {'on' if result['shot_noise'] else 'off'}, optics {'on' if result['optics'] else 'off'}")
    click.echo("accuracy: keyed int8 / keyed float / unkeyed float (same sensor, no key)")
    header = f"{'read noise (FS, 8-bit LSB)':<28}" + "".join(f"{str(b) + ' bits':>22}" for b in result["bits"])
    click.echo(header)
    click.echo("-" * len(header))
    for r in result["read_noise"]:
        accs = ["/".join(f"{cell[(r, b)]['acc_' + m]:.3f}" for m in MODELS) for b in result["bits"]]
        click.echo(f"{f'{r:.4f} ({r * 255:.1f} LSB)':<28}" + "".join(f"{a:>22}" for a in accs))
    click.echo(f"keyed frames keep {result['keyed_signal_fraction']:.2f} of the plain signal "
               f"(key gains normalised into the ADC range); {result['elapsed_s']:.1f} s")


def write_plot(result: dict, path: str | Path) -> None:
    """Accuracy vs read noise, one line per ADC depth; one panel per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MODELS), figsize=(5 * len(MODELS), 4), sharey=True)
    for ax, name in zip(axes, MODELS):
        for b in result["bits"]:
            rows = [r for r in result["results"] if r["bits"] == b]
            ax.plot([r["read_noise"] * 255 for r in rows], [r[f"acc_{name}"] for r in rows], marker="o",
                    label=f"{b} bits")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("read noise RMS (8-bit LSB = 1/255 of full scale)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy")
    axes[0].legend()
    fig.suptitle(f"keycam bench sensor: {result['dataset']}, {result['n']} frames, profile {result['profile']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--dataset", type=click.Choice(sorted(SHIPPED_MODELS)), default="mnist", show_default=True)
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="ONNX base model (default: the shipped one for the dataset).")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, help="Key profile.")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True, help="Test frames used.")
@click.option("--read-noise", default="0,0.02,0.05,0.1,0.2,0.3", show_default=True,
              help="Read-noise RMS values, fractions of ADC full scale.")
@click.option("--bits", default="1,2,4,8,12", show_default=True, help="ADC resolutions.")
@click.option("--shot-noise/--no-shot-noise", default=False, show_default=True)
@click.option("--full-well", type=float, default=10000.0, show_default=True, help="Electrons at full scale.")
@click.option("--optics", is_flag=True, help="Add the simulated fiber-bundle optics in front of the key.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the key secret and the noise.")
@json_option("json_path", default="bench-sensor.json")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default="bench-sensor.png", show_default=True)
def sensor(dataset: str, model_path: str | None, profile: str, limit: int, read_noise: str, bits: str,
           shot_noise: bool, full_well: float, optics: bool, seed: int, json_path: str, plot_path: str) -> None:
    """Keyed-model accuracy vs read noise and ADC bits (table, JSON and PNG plot).

    \b
    Example:
      keycam bench sensor --dataset mnist --bits 4,8 --json sensor.json --plot sensor.png
    """
    noise = _floats(read_noise, "--read-noise")
    depths = [int(b) for b in _floats(bits, "--bits")]
    if any(r < 0 for r in noise) or any(not 1 <= b <= 16 for b in depths):
        raise ConfigError("--read-noise values must be >= 0 and --bits within 1..16")
    result = run_sensor_bench(dataset, noise, depths, limit, model_path, profile, shot_noise, full_well, optics, seed)
    print_grid(result)
    write_json(json_path, result)
    write_plot(result, plot_path)
    click.echo(f"wrote {plot_path}")
