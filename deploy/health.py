"""Model health check for an installed slot: the keyed model must classify the bundle's canary
keyed frames exactly as the provisioning host saw it do. Device side (no tools/ imports).

The model, the canary and the sensor key stay sealed in the slot: they are opened into memory with
the device key of the identity the slot's device.yaml names (keys.device_files), as `keycam run`
opens them; a bundle without device.yaml uses the agent's layout, ROOT/identity.

Run as `python -m deploy.health SLOT_DIR` so the agent can bound it with a timeout; prints one JSON
object and exits 0 when healthy, 1 otherwise.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from base.errors import KeycamError
from deploy.manifest import MANIFEST, Manifest
from keys.device_files import DeviceFiles
from keys.sealing import ROLE_CANARY, ROLE_MODEL, ROLE_SENSOR_KEY

CANARY_ARRAYS = ("frames", "expected")


def save_canary(frames: np.ndarray, expected: np.ndarray) -> bytes:
    """Serialise canary keyed frames (uint8) and their expected class indices as .npz bytes."""
    buf = io.BytesIO()
    np.savez(buf, frames=np.asarray(frames, dtype=np.uint8), expected=np.asarray(expected, dtype=np.int64))
    return buf.getvalue()


def load_canary(blob: bytes, what: str = "canary") -> tuple[np.ndarray, np.ndarray]:
    """Parse `save_canary` bytes (clear: opened from its sealed file first)."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            frames, expected = data["frames"], data["expected"]
    except (OSError, ValueError, KeyError) as exc:
        raise KeycamError(f"{what} is unreadable: {exc}") from exc
    if frames.dtype != np.uint8 or expected.ndim != 1 or len(frames) != len(expected) or len(frames) == 0:
        raise KeycamError(f"{what} must hold uint8 frames and one expected class per frame")
    return frames, expected


def _slot_files(slot_dir: Path, manifest: Manifest) -> tuple[DeviceFiles, str | None]:
    """How the service will open the slot's files, and a problem with its config (or None)."""
    from deploy.payload import CONFIG
    if CONFIG not in manifest.files:
        return DeviceFiles(manifest.device_id, slot_dir.parent.parent / "identity"), None
    from edge.config import load_config
    try:
        cfg = load_config(slot_dir / CONFIG)
    except KeycamError as exc:
        return DeviceFiles(manifest.device_id, None), f"device config does not load: {exc}"
    if cfg.identity is None:
        return DeviceFiles(manifest.device_id, None), ("device config names no identity: key material would "
                                                       "be read in clear")
    return DeviceFiles(cfg.device_id, cfg.identity), None


def _check_sensor_key(slot_dir: Path, manifest: Manifest, files: DeviceFiles) -> str | None:
    """An opened sensor key is the one the manifest names."""
    from deploy.payload import SENSOR_KEY
    want = manifest.keys.get("sensor_fingerprint")
    if SENSOR_KEY in manifest.files and want:
        have = hashlib.sha256(files.read(slot_dir / SENSOR_KEY, ROLE_SENSOR_KEY)).hexdigest()
        if have != want:
            return f"sensor key fingerprint {have[:16]} != manifest {want[:16]}"
    return None


def check_slot(slot_dir: Path) -> dict:
    """Run the slot's keyed model on its canary frames; return a JSON-able verdict."""
    from edge.runtime import TFLiteModel
    start = time.monotonic()
    manifest = Manifest.from_bytes((slot_dir / MANIFEST).read_bytes())
    model_file = manifest.keys.get("model")
    canary_file = manifest.health.get("canary")
    if not model_file or not canary_file:
        return {"ok": False, "reason": "bundle declares no model or no canary frames"}
    files, problem = _slot_files(slot_dir, manifest)
    problem = problem or _check_sensor_key(slot_dir, manifest, files)
    if problem:
        return {"ok": False, "reason": problem}
    model = TFLiteModel(files.read(slot_dir / model_file, ROLE_MODEL))
    want_fp = manifest.keys.get("key_fingerprint")
    have_fp = model.metadata.get("key_fingerprint")
    if want_fp and have_fp and want_fp != have_fp:
        return {"ok": False, "reason": f"model key fingerprint {have_fp[:16]} != manifest {want_fp[:16]}"}
    frames, expected = load_canary(files.read(slot_dir / canary_file, ROLE_CANARY), f"canary {canary_file}")
    got = np.argmax(model.predict(frames), axis=1)
    correct = int(np.sum(got == expected))
    verdict = {"ok": correct == len(expected), "correct": correct, "total": int(len(expected)),
               "seconds": round(time.monotonic() - start, 3)}
    if not verdict["ok"]:
        verdict["reason"] = f"keyed model classified {correct}/{len(expected)} canary frames as expected"
    return verdict


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m deploy.health SLOT_DIR", file=sys.stderr)
        return 2
    try:
        verdict = check_slot(Path(argv[0]))
    except (KeycamError, OSError) as exc:
        verdict = {"ok": False, "reason": str(exc)}
    print(json.dumps(verdict))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
