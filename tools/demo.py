"""`keycam demo`: the whole chain on the embedded default, no hardware and no downloads.

throwaway device key set -> key the shipped Fashion-MNIST LeNet -> shipped sample frames through a
minimal simulated pre-ADC stage (A0 on float intensities, then an 8-bit ADC) -> keyed int8 TFLite
model -> prediction records. Prints predictions, accuracy, frames/s, per-stage latency; writes a PNG
montage of plain vs keyed frames.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import click
import numpy as np

from edge.runtime import TFLiteModel
from hardware.camera.samples import load_samples
from hardware.preadc import PreADCStage, SensorModel
from keys.profiles import DEFAULT_PROFILE
from tools.bench.keyed import shipped_model
from tools.keying.provision import build_keyed_model
from tools.montage import save_montage


@click.command()
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, help="Key profile (full, stem, scatter4, ...).")
@click.option("--frames", "n_frames", type=click.IntRange(1), default=None, help="Frames to classify (default: all shipped).")
@click.option("--show", type=click.IntRange(0), default=20, show_default=True, help="Prediction records to print.")
@click.option("--out", "out_png", type=click.Path(dir_okay=False), default="keycam-demo.png", show_default=True,
              help="Montage PNG of plain vs keyed frames.")
def demo(profile: str, n_frames: int | None, show: int, out_png: str) -> None:
    """Key the shipped model for a throwaway simulated device and classify the shipped frames.

    \b
    Example:
      keycam demo --profile stem --frames 100 --out demo.png
    """
    images, labels = load_samples(n_frames)
    click.echo(f"1/4 provisioning a throwaway simulated device (profile {profile}) ...")
    prov = build_keyed_model(shipped_model("fashion"), os.urandom(32), "demo-sim", profile, float_model=False)
    model = TFLiteModel(prov.tflite_int8)
    names = model.metadata.get("labels") or [str(i) for i in range(10)]
    click.echo(f"    key set {prov.keyset.fingerprint[:16]}  model {prov.report['model_id']}  "
               f"keyed int8 .tflite {len(prov.tflite_int8):,} B  ({prov.report['total_s']:.2f} s)")
    sensor = PreADCStage(prov.keyset.sensor, SensorModel(shot_noise=True, read_noise=0.001, seed=1))
    click.echo(f"2/4 streaming {len(images)} frames: scene -> A0 (pre-ADC, shot + read noise) -> 8-bit ADC "
               "-> keyed int8 model")
    t_key, t_infer, correct, keyed_frames = [], [], 0, []
    start = time.perf_counter()
    for seq, (image, label) in enumerate(zip(images, labels)):
        t0 = time.perf_counter()
        keyed = sensor(image.astype(np.float64) / 255.0)
        t1 = time.perf_counter()
        probs = model.invoke(keyed)
        t2 = time.perf_counter()
        t_key.append(t1 - t0)
        t_infer.append(t2 - t1)
        top = int(np.argmax(probs))
        correct += top == label
        if len(keyed_frames) < 12:
            keyed_frames.append(keyed)
        if seq < show:
            click.echo(json.dumps({"seq": seq, "label": names[top], "score": round(float(probs[top]), 3),
                                   "truth": names[label]}))
    elapsed = time.perf_counter() - start
    click.echo(f"3/4 accuracy {correct / len(images):.4f} on {len(images)} frames; {len(images) / elapsed:.0f} frames/s; "
               f"median latency key+ADC {1e3 * statistics.median(t_key):.3f} ms, "
               f"inference {1e3 * statistics.median(t_infer):.3f} ms")
    path = save_montage([images[:12], np.stack(keyed_frames)], out_png)
    click.echo(f"4/4 wrote {path} (top: plain scene, never digitised on a device; bottom: what the ADC sees)")
