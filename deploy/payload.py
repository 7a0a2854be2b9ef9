"""Names of the files a device gets (in bundles and exports) and the device config written with them."""
from __future__ import annotations

MODEL, CANARY, CONFIG, SENSOR_KEY = "model.tflite", "canary.npz", "device.yaml", "sensor.key"


def device_config(device: dict, gen: dict) -> dict:
    """The device's config as shipped in bundles and exports (paths relative to the slot).

    `device` and `gen` are a vault device record and one of its key-set generations.
    """
    sensor = {"mode": "faceplate" if device["faceplate"] else "preadc",
              "fingerprint": gen["sensor_fingerprint"]}
    if not device["faceplate"]:
        sensor["key_file"] = SENSOR_KEY
    return {"device_id": device["device_id"], "hardware": device["hardware"],
            "model": {"path": MODEL, "model_id": gen["model_id"], "key_fingerprint": gen["key_fingerprint"],
                      "profile": gen["profile"], "output_encrypted": gen["output_encryption"]},
            "sensor": sensor}
