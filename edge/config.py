"""The device configuration: one YAML file per device, validated on load.

Every section is a dataclass beside the code it configures; its type hints, defaults and field rules
are the schema (base.schema). `camera`, `key_stage` and each of `sinks` are typed by their `type`
key through one registry per family (hardware.camera.CAMERAS, edge.keystage.KEY_STAGES,
edge.sinks.SINKS). Unknown keys, wrong types, out-of-range values and missing files each raise one
ConfigError naming the file and the key path. Relative paths (files, camera.source) are resolved
against the YAML file's folder. See examples/sim-device.yaml.

`identity:` names the device's identity folder (its key store, keys.keystore). With it, the model,
the sensor key and a preprocess stage must be files sealed to the device (keys.sealing) and are
opened into memory only; provisioning writes `identity: identity` (exported root) or
`identity: ../../identity` (an A/B slot, ROOT/slots/X). Without it the files are clear: only for the
public demo device and research runs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml

from base.errors import ConfigError
from base.ids import ID_RULE, is_valid_id
from base.schema import NON_NEGATIVE, POSITIVE, DirPath, FilePath, Rule, Section, between, parse_section, setting
from edge.keystage import KEY_STAGES, KeyStageConfig
from edge.sinks import SINKS, SinkConfig
from hardware.camera import CAMERAS, CameraConfig


@dataclass(frozen=True)
class ModelConfig(Section):
    path: FilePath                           # keyed .tflite with keycam metadata
    top_k: int = setting(3, rule=between(1, 10))
    num_threads: int = setting(1, rule=between(1, 64))
    watch_interval_s: float = setting(2.0, rule=NON_NEGATIVE)   # poll model/key files for a hot swap (0: only on SIGHUP)


@dataclass(frozen=True)
class PreprocessConfig(Section):
    path: FilePath                           # keyed stage .tflite run on each keyed frame before the model (SAN)
    num_threads: int = setting(1, rule=between(1, 64))


@dataclass(frozen=True)
class PipelineConfig(Section):
    queue_size: int = setting(4, rule=between(1, 1024))         # bound of each queue between stages
    drop_when_full: bool = True              # capture drops (and counts) frames when the queue is full
    stats_interval_s: float = setting(10.0, rule=NON_NEGATIVE)  # period of the stats record (0: none)
    max_record_bytes: int = setting(2048, rule=between(64, 8192))
    camera_timeout_s: float = setting(1.0, rule=POSITIVE)


@dataclass(frozen=True)
class MetricsConfig(Section):
    enabled: bool = True
    port: int = setting(9464, rule=between(0, 65535, "0: any free port"))   # Prometheus text on 127.0.0.1:<port>


@dataclass(frozen=True, kw_only=True)
class DeviceConfig(Section):
    device_id: str = setting(rule=Rule(is_valid_id, f"must be {ID_RULE}"))
    camera: Annotated[CameraConfig, CAMERAS]
    key_stage: Annotated[KeyStageConfig, KEY_STAGES]
    model: ModelConfig
    sinks: list[Annotated[SinkConfig, SINKS]] = setting(
        rule=Rule(bool, "expected a non-empty list of sinks, e.g. [{type: stdout}]"))
    pipeline: PipelineConfig = setting(default_factory=PipelineConfig)
    metrics: MetricsConfig = setting(default_factory=MetricsConfig)
    preprocess: PreprocessConfig | None = None   # optional; off by default
    identity: DirPath | None = None          # the device identity folder: key material is then sealed
    source: Path = setting(Path("."), internal=True)   # the YAML file this came from (not a YAML key)


def parse_config(data: object, base: Path, name: str = "config") -> DeviceConfig:
    """Validate an already-parsed YAML mapping; relative paths are resolved against `base`."""
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections")
    return dataclasses.replace(parse_section(data, DeviceConfig, "", base), source=base / name)


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a device YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        # the folder as named, symlinks kept: ROOT/slots/current/device.yaml names files through `current`,
        # so a slot switch is seen by the hot swap (which follows the links)
        return parse_config(data, path.absolute().parent, path.name)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
