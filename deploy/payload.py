"""Names of the files a device gets (in bundles and exports) and its service config (device.yaml).

device.yaml is a full `keycam run` config (edge/config.py schema) made from a template: the
operator's choices (camera, sinks, faceplate port and id, pipeline) come from the template; the
device id, the model path, the identity folder and, without a faceplate, the simulated key stage
with the sensor key come from the vault. Paths are relative to the YAML's folder, so the service runs
`keycam run --config ROOT/slots/current/device.yaml`, and `identity: ../../identity` (a slot) or
`identity: identity` (an exported root) names ROOT/identity, whose key opens the sealed files.
"""
from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from base.errors import ConfigError

MODEL, CANARY, CONFIG, SENSOR_KEY = "model.tflite", "canary.npz", "device.yaml", "sensor.key"
IDENTITY_FROM_SLOT, IDENTITY_FROM_ROOT = "../../identity", "identity"
DEFAULT_TEMPLATE = {"camera": {"type": "picamera2", "size": [28, 28], "index": 0}, "sinks": [{"type": "stdout"}]}


def load_template(path: str | Path) -> dict:
    """Read a device config template (a `keycam run` YAML; device_id and model.path get replaced)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config template {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"config template {path} must be a mapping (a keycam run config)")
    return doc


def device_config(device_id: str, faceplate: bool, template: dict | None = None,
                  identity: str | None = IDENTITY_FROM_SLOT) -> dict:
    """The device's `keycam run` config: `template` (the one given, else the vault's; None: a default)
    plus the vault's facts.

    `identity` is the identity folder relative to the YAML (None: clear files, a research export)."""
    cfg = copy.deepcopy(template if template is not None else DEFAULT_TEMPLATE)
    cfg["device_id"] = device_id
    cfg.pop("identity", None)
    if identity is not None:
        cfg["identity"] = identity
    cfg["model"] = {**(cfg.get("model") or {}), "path": MODEL}
    stage = dict(cfg.get("key_stage") or {})
    if faceplate:
        if stage.get("type") != "faceplate":
            hint = "pass --config FILE" if template is None else f"the template's key_stage type is {stage.get('type')!r}"
            raise ConfigError(f"{device_id} has a faceplate: its config template needs "
                              f"key_stage {{type: faceplate, port, expected_id}} ({hint})")
    else:
        keep = {k: v for k, v in stage.items() if stage.get("type") == "simulated" and k != "sensor_key"}
        stage = {**keep, "type": "simulated", "sensor_key": SENSOR_KEY}
    cfg["key_stage"] = stage
    return cfg


def check_template(path: str | Path, device_id: str, faceplate: bool) -> dict:
    """Read a config template and validate the device.yaml it would give (placeholder model and
    sensor key files), so provisioning refuses a bad template before any keying; returns the template."""
    template = load_template(path)
    try:
        render_config(device_id, faceplate, [MODEL, SENSOR_KEY], template)
    except ConfigError as exc:
        raise ConfigError(f"config template {path}: {exc}") from None
    return template


def render_config(device_id: str, faceplate: bool, names: Iterable[str], template: dict | None = None,
                  identity: str | None = IDENTITY_FROM_SLOT) -> bytes:
    """device.yaml bytes (see `device_config`), validated with the service's own loader (files `names` beside it)."""
    from edge.config import parse_config
    cfg = device_config(device_id, faceplate, template, identity)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            (Path(tmp) / name).touch()      # the loader checks that files exist, never their content
        check = dict(cfg)
        if identity is not None:
            check["identity"] = str(Path(tmp))
        try:
            parse_config(check, Path(tmp), CONFIG)
        except ConfigError as exc:
            raise ConfigError(f"device config for {device_id} is invalid: {exc}") from exc
    return yaml.safe_dump(cfg, sort_keys=False).encode()
