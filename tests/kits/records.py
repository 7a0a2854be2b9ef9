"""Small but complete vault records for tests that need devices without keying a model."""
from __future__ import annotations

from keys.fields import b64e
from keys.records import DeviceRecord, Generation, ModelSource


def sample_generation(n: int = 1, state: str = "active") -> Generation:
    """A generation record with placeholder key material (enough for the vault, not for a device)."""
    return Generation(generation=n, state=state, created="2026-01-01T00:00:00Z", secret=b64e(bytes([n]) * 32),
                      keyset=b64e(b"placeholder-keyset"), profile="stem", output_encryption=False,
                      key_fingerprint=f"{n:02x}" * 32, sensor_fingerprint=f"{n + 16:02x}" * 32, model_id="lenet-test",
                      labels=["a", "b"], report={"total_s": 1.5}, model_source=ModelSource("/models/m.onnx", "00" * 32),
                      model_sealed=b64e(b"sealed"), model_sha256="11" * 32, canary=b64e(b"npz"))


def sample_device(device_id: str = "cam-1", **changes) -> DeviceRecord:
    """A device record with one active generation; `changes` replace fields (e.g. config=...)."""
    fields = dict(device_id=device_id, created="2026-01-01T00:00:00Z", state="active", hardware="rpi4",
                  faceplate=False, device_public=b64e(bytes(range(32))),
                  model_source=ModelSource("/models/m.onnx", "00" * 32), generations=[sample_generation()])
    return DeviceRecord(**{**fields, **changes})
