"""Build the simulated demo device shipped in examples/sim-device/ (host side).

Keys tools/models/lenet_fashion.onnx for device 'sim-0001' with a FIXED, PUBLIC demo secret and writes
examples/sim-device/model.tflite (keyed, int8, full profile) and examples/sim-device/sensor.key (the
device's sensor key only). The secret is a throwaway printed right here: never use these files, or
this secret, for a real device; provision real devices with `keycam keys`.

    .venv/bin/python -m tools.make_sim_device [--onnx PATH] [--out DIR] [--profile full|stem]
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import click

from keys.profiles import DEFAULT_PROFILE, PROFILES

ROOT = Path(__file__).resolve().parents[1]
DEMO_SECRET = hashlib.sha256(b"keycam public demo secret - NOT A REAL KEY").digest()
DEMO_DEVICE_ID = "sim-0001"


def default_onnx() -> Path:
    """The base model the demo device is keyed from."""
    return ROOT / "tools" / "models" / "lenet_fashion.onnx"


@click.command()
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False),
              default=str(default_onnx()), show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=str(ROOT / "examples" / "sim-device"),
              show_default=True)
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default=DEFAULT_PROFILE, show_default=True)
@click.option("--output-encryption/--no-output-encryption", default=False, show_default=True)
def main(onnx_path: str, out_dir: str, profile: str, output_encryption: bool) -> None:
    """Key the demo model for the simulated device and write model.tflite + sensor.key."""
    from tools.keying.provision import build_keyed_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    click.echo(f"keying {onnx_path} for {DEMO_DEVICE_ID} (profile {profile}, demo secret) ...", err=True)
    prov = build_keyed_model(onnx_path, DEMO_SECRET, DEMO_DEVICE_ID, profile=profile,
                             output_encryption=output_encryption, float_model=False)
    (out / "model.tflite").write_bytes(prov.tflite_int8)
    (out / "sensor.key").write_bytes(prov.keyset.sensor.to_bytes())
    click.echo(f"wrote {out / 'model.tflite'} ({len(prov.tflite_int8)} bytes) and {out / 'sensor.key'}; "
               f"model {prov.keyset.model_id}, sensor key {prov.keyset.sensor_fingerprint[:16]}, "
               f"float check max rel. error {prov.report['float_max_rel_error']:.2e}", err=True)


if __name__ == "__main__":
    main()
