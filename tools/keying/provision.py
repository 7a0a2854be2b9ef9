"""One call from a trained ONNX model and a device secret to the device's keyed int8 .tflite.

key generation -> keying W'_i = A_i W_i A_{i-1}^-1 -> float check (<= 1e-4) -> int8 calibration on
keyed ADC frames -> .tflite with keycam metadata (model id, key fingerprints, profile, labels).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from base.errors import KeycamError
from hardware.digitise import key_and_digitise
from keys.keyset import KeySet
from keys.profiles import DEFAULT_PROFILE, Profile, get_profile
from tools.ir import Network
from tools.keying.calibration import CALIBRATION_FRAMES, calibration_for
from tools.keying.cost import projected_cost
from tools.keying.keyed import derive_keyset, key_network, model_id_of, verify_keyed
from tools.onnx_import import load_onnx
from tools.tflite.writer import write_tflite

LARGE_KEYED_BYTES = 256 * 2 ** 20       # keyed CSR matrices (float32 size) above which keying runs in float32


@dataclass
class Provisioned:
    """Everything provisioning produces for one device and one model."""
    keyset: KeySet
    tflite_int8: bytes
    tflite_float: bytes
    report: dict = field(default_factory=dict)


def default_calibration_frames(net: Network, limit: int = CALIBRATION_FRAMES) -> np.ndarray:
    """Plain float frames for calibration: the model's training data if present, else the shipped samples."""
    return calibration_for(net, None, limit).frames


def model_metadata(net: Network, keyset: KeySet | None, kind: str) -> dict:
    """The JSON metadata embedded in every .tflite keycam writes."""
    meta = {"kind": kind, "model_id": keyset.model_id if keyset else net.meta.get("model_id", ""),
            "labels": net.meta.get("labels", []), "dataset": net.meta.get("dataset", ""),
            "input_shape": list(net.input_shape), "output_encrypted": bool(keyset and keyset.output is not None)}
    if keyset is not None:
        meta.update(profile=keyset.profile, device_id=keyset.device_id, key_fingerprint=keyset.fingerprint,
                    sensor_fingerprint=keyset.sensor_fingerprint)
    return meta


def keying_dtype(net: Network, profile: Profile) -> type:
    """float64 for keyed nets whose sparse matrices stay small (the float check exact to ~1e-15, and every
    model keyed so far made again bit for bit by rekey); float32 once they would pass LARGE_KEYED_BYTES,
    which halves the peak memory of large nets (the all-conv net under `full`: 4.3 GB, int8 write included)."""
    return np.float32 if projected_cost(net, profile)["csr_float_bytes"] > LARGE_KEYED_BYTES else np.float64


def build_keyed_model(onnx_path: str | Path, secret: bytes, device_id: str, profile: str | Profile = DEFAULT_PROFILE,
                      output_encryption: bool = False, calib_frames: np.ndarray | None = None,
                      float_model: bool = True, calibration: str | Path | None = None) -> Provisioned:
    """Derive the device's key set, key the model, check it in float and write int8 (+ float) .tflite.

    Calibration: `calib_frames` if given, else `calibration_for(net, calibration)` (a folder of images or an
    .npz, else the model's dataset); the report's 'calibration' says which."""
    if not device_id or not isinstance(device_id, str):
        raise KeycamError("device id must be a non-empty string")
    onnx_path = Path(onnx_path)
    net = load_onnx(onnx_path)
    start = time.perf_counter()
    model_id = model_id_of(onnx_path.read_bytes())
    prof = get_profile(profile)
    keyset = derive_keyset(secret, device_id, model_id, net, prof, output_encryption)
    t_keys = time.perf_counter()
    keyed = key_network(net, keyset, profile=prof, dtype=keying_dtype(net, prof))
    t_keying = time.perf_counter()
    if calib_frames is None:
        calib = calibration_for(net, calibration)
        plain, calib_source = calib.frames, calib.source
    else:
        plain = np.asarray(calib_frames, dtype=np.float64).reshape(len(calib_frames), -1)
        calib_source = f"{len(plain)} frames given by the caller"
    if plain.max(initial=0) > 1.0:
        plain = plain / 255.0
    float_error = verify_keyed(net, keyed, keyset, plain[:64])
    keyed_frames = key_and_digitise(keyset.sensor, plain).astype(np.float64) / 255.0
    meta = model_metadata(net, keyset, "keyed")
    tflite_int8, ops = write_tflite(keyed, int8=True, calib=keyed_frames, metadata={**meta, "quantization": "int8"},
                                    sparse_ell=prof.sensor_stage, release=not float_model)
    t_int8 = time.perf_counter()
    tflite_float = write_tflite(keyed, metadata={**meta, "quantization": "float32"})[0] if float_model else b""
    report = {"model_id": model_id, "profile": keyset.profile, "float_max_rel_error": float_error,
              "calibration": calib_source,
              "keygen_s": t_keys - start, "keying_s": t_keying - t_keys, "quantize_write_s": t_int8 - t_keying,
              "total_s": t_int8 - start, "size_int8": len(tflite_int8), "size_float": len(tflite_float),
              "ops": ops, "float_ops": [o for o in ops if o["dtype"] == "float32"]}
    return Provisioned(keyset, tflite_int8, tflite_float, report)
