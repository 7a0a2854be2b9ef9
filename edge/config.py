"""The device configuration: one YAML file per device, validated on load.

Every section is a dataclass; its type hints and defaults are the schema. Unknown keys, wrong types,
out-of-range values and missing files each raise one ConfigError naming the file and the key.
Relative paths are resolved against the YAML file's folder. See examples/sim-device.yaml.

`identity:` names the device's identity folder (its key store, keys.keystore). With it, the model,
the sensor key and a preprocess stage must be files sealed to the device (keys.sealing) and are
opened into memory only; provisioning writes `identity: identity` (exported root) or
`identity: ../../identity` (an A/B slot, ROOT/slots/X). Without it the files are clear: only for the
public demo device and research runs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from base.errors import ConfigError
from base.ids import ID_RULE, is_valid_id


class FilePath(str):
    """A path to an existing file, relative to the config file's folder."""


class DirPath(str):
    """A path to an existing directory, relative to the config file's folder."""


@dataclass(frozen=True)
class KeyStageConfig:
    """How frames are keyed: `simulated` pre-ADC stage (sensor key file) or a physical `faceplate`."""

    type: str
    sensor_key: FilePath | None = None       # simulated: the device's sensor key file (keys.factors.Key)
    sensor: dict = field(default_factory=dict)   # simulated: hardware.preadc.SensorModel parameters
    port: str | None = None                  # faceplate: serial port of the actuator
    expected_id: str | None = None           # faceplate: id of the faceplate that must be engaged
    baudrate: int = 115200
    health_interval_s: float = 1.0           # how often the key stage is re-checked while running
    retry_initial_s: float = 0.5             # fail-closed retry back-off: initial, doubling to max
    retry_max_s: float = 30.0


@dataclass(frozen=True)
class ModelConfig:
    path: FilePath                           # keyed .tflite with keycam metadata
    top_k: int = 3
    num_threads: int = 1
    watch_interval_s: float = 2.0            # poll model/key files for a hot swap (0: only on SIGHUP)


@dataclass(frozen=True)
class PreprocessConfig:
    path: FilePath                           # keyed stage .tflite run on each keyed frame before the model (SAN)
    num_threads: int = 1


@dataclass(frozen=True)
class PipelineConfig:
    queue_size: int = 4                      # bound of each queue between stages
    drop_when_full: bool = True              # capture drops (and counts) frames when the queue is full
    stats_interval_s: float = 10.0           # period of the stats record (0: none)
    max_record_bytes: int = 2048
    camera_timeout_s: float = 1.0


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    port: int = 9464                         # Prometheus text on http://127.0.0.1:<port>/metrics


@dataclass(frozen=True)
class StdoutSinkConfig:
    type: str


@dataclass(frozen=True)
class DiscardSinkConfig:
    type: str


@dataclass(frozen=True)
class SerialSinkConfig:
    type: str
    port: str
    baudrate: int = 115200
    write_timeout: float = 1.0


@dataclass(frozen=True)
class MqttSinkConfig:
    type: str
    topic: str
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None
    buffer: int = 1000                       # records kept while the broker is away; beyond: counted lost
    keepalive: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    username: str | None = None
    password: str | None = None
    tls_ca: FilePath | None = None


SINK_TYPES = {"stdout": StdoutSinkConfig, "serial": SerialSinkConfig, "mqtt": MqttSinkConfig,
              "discard": DiscardSinkConfig}
SinkConfig = StdoutSinkConfig | SerialSinkConfig | MqttSinkConfig | DiscardSinkConfig


@dataclass(frozen=True)
class DeviceConfig:
    device_id: str
    camera: dict                             # validated by hardware.camera.make_camera
    key_stage: KeyStageConfig
    model: ModelConfig
    sinks: list
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    preprocess: PreprocessConfig | None = None   # optional; off by default
    identity: DirPath | None = None          # the device identity folder: key material is then sealed
    source: Path = Path(".")                 # the YAML file this came from (not a YAML key)


# value checks: (dataclass, field) -> (predicate, what it requires)
_POSITIVE = (lambda v: v > 0, "must be > 0")
_NON_NEGATIVE = (lambda v: v >= 0, "must be >= 0")
_CHECKS: dict[tuple[type, str], tuple] = {
    (KeyStageConfig, "type"): (lambda v: v in ("simulated", "faceplate"), "must be simulated or faceplate"),
    (KeyStageConfig, "health_interval_s"): _POSITIVE,
    (KeyStageConfig, "retry_initial_s"): _POSITIVE,
    (KeyStageConfig, "retry_max_s"): _POSITIVE,
    (KeyStageConfig, "baudrate"): _POSITIVE,
    (ModelConfig, "top_k"): (lambda v: 1 <= v <= 10, "must be 1..10"),
    (ModelConfig, "num_threads"): (lambda v: 1 <= v <= 64, "must be 1..64"),
    (ModelConfig, "watch_interval_s"): _NON_NEGATIVE,
    (PreprocessConfig, "num_threads"): (lambda v: 1 <= v <= 64, "must be 1..64"),
    (PipelineConfig, "queue_size"): (lambda v: 1 <= v <= 1024, "must be 1..1024"),
    (PipelineConfig, "stats_interval_s"): _NON_NEGATIVE,
    (PipelineConfig, "max_record_bytes"): (lambda v: 64 <= v <= 8192, "must be 64..8192"),
    (PipelineConfig, "camera_timeout_s"): _POSITIVE,
    (MetricsConfig, "port"): (lambda v: 0 <= v <= 65535, "must be 0..65535 (0: any free port)"),
    (SerialSinkConfig, "baudrate"): _POSITIVE,
    (SerialSinkConfig, "write_timeout"): _POSITIVE,
    (MqttSinkConfig, "port"): (lambda v: 1 <= v <= 65535, "must be 1..65535"),
    (MqttSinkConfig, "buffer"): (lambda v: 1 <= v <= 1_000_000, "must be 1..1000000"),
    (MqttSinkConfig, "keepalive"): (lambda v: 5 <= v <= 3600, "must be 5..3600"),
    (MqttSinkConfig, "reconnect_min_s"): _POSITIVE,
    (MqttSinkConfig, "reconnect_max_s"): _POSITIVE,
    (MqttSinkConfig, "topic"): (lambda v: v and not set(v) & set("#+\0"),
                                "must be a non-empty topic without wildcards"),
    (DeviceConfig, "device_id"): (is_valid_id, f"must be {ID_RULE}"),
}


def _type_name(hint: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             dict: "a mapping", list: "a list", FilePath: "a file path", DirPath: "a directory path"}
    if isinstance(hint, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(hint))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: object, hint: object, where: str, base: Path) -> object:
    """Check `value` against a type hint (and resolve file paths); raise ConfigError otherwise."""
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if dataclasses.is_dataclass(hint):
        return _section(value, hint, where, base)
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda v: isinstance(v, str), FilePath: lambda v: isinstance(v, str) and v != "",
          DirPath: lambda v: isinstance(v, str) and v != "",
          dict: lambda v: isinstance(v, dict), list: lambda v: isinstance(v, list)}[hint](value)
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")
    if hint is float:
        return float(value)
    if hint in (FilePath, DirPath):
        path = Path(value).expanduser()
        path = path if path.is_absolute() else (base / path)
        if hint is DirPath:
            if not path.is_dir():
                raise ConfigError(f"{where}: directory not found: {path}")
            return DirPath(os.path.normpath(path))
        if not path.is_file():
            raise ConfigError(f"{where}: file not found: {path}")
        return FilePath(os.path.abspath(path))   # symlinks kept: A/B slot flips are seen
    return value


def _section(data: object, cls: type, where: str, base: Path) -> object:
    """Build dataclass `cls` from a mapping: unknown keys, missing keys and bad values are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if (cls, f.name) != (DeviceConfig, "source")}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                          f"(allowed: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: required key is missing")
            continue
        values[name] = _coerce(data[name], hints[name], key, base)
        check = _CHECKS.get((cls, name))
        if check and values[name] is not None and not check[0](values[name]):
            raise ConfigError(f"{key}: {check[1]}, got {data[name]!r}")
    try:
        return cls(**values)                 # a section's own __post_init__ checks its ranges
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


def parse_section(data: object, cls: type, where: str, base: Path = Path(".")) -> object:
    """Build dataclass `cls` from a mapping with this module's checks (unknown keys, types, nested
    dataclasses, __post_init__ ranges); every config section outside this file uses it too."""
    return _section(data, cls, where, base)


def _sinks(data: object, where: str, base: Path) -> list:
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: expected a non-empty list of sinks, e.g. [{{type: stdout}}]")
    sinks = []
    for i, entry in enumerate(data):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind not in SINK_TYPES:
            raise ConfigError(f"{where}[{i}].type: must be one of {', '.join(SINK_TYPES)}, got {kind!r}")
        sinks.append(_section(entry, SINK_TYPES[kind], f"{where}[{i}]", base))
    return sinks


def _check_key_stage(ks: KeyStageConfig, where: str) -> None:
    needs = {"simulated": ("sensor_key",), "faceplate": ("port", "expected_id")}[ks.type]
    for name in needs:
        if getattr(ks, name) is None:
            raise ConfigError(f"{where}.{name}: required when key_stage.type is {ks.type}")
    other = {"simulated": ("port", "expected_id"), "faceplate": ("sensor_key",)}[ks.type]
    for name in other:
        if getattr(ks, name) is not None:
            raise ConfigError(f"{where}.{name}: not used when key_stage.type is {ks.type}; remove it")
    if ks.retry_max_s < ks.retry_initial_s:
        raise ConfigError(f"{where}.retry_max_s: must be >= retry_initial_s")


def parse_config(data: object, base: Path, name: str = "config") -> DeviceConfig:
    """Validate an already-parsed YAML mapping; relative paths are resolved against `base`."""
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections")
    data = dict(data)
    sinks = _sinks(data.pop("sinks", None), "sinks", base)
    cfg = _section({**data, "sinks": []}, DeviceConfig, "", base)
    _check_key_stage(cfg.key_stage, "key_stage")
    if not cfg.camera.get("type"):
        raise ConfigError("camera.type: required key is missing (replay or picamera2)")
    from edge.config_check import check_sections
    check_sections(cfg)
    return dataclasses.replace(cfg, sinks=sinks, source=base / name)


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
