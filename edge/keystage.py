"""The key stage and its health: the service fails closed unless the right key is in the light path.

Two kinds:
- `SimulatedKeyStage`: the pre-ADC stage (hardware.preadc) with the device's sensor key file; healthy
  only when the key file exists, opens (sealed to the device: into memory only, keys.device_files),
  parses, and its fingerprint equals the model's `sensor_fingerprint`.
- `FaceplateKeyStage`: a physical fiber faceplate keys the light before the sensor; healthy only when
  the actuator answers, reports no fault, and the expected faceplate id is engaged. The stage then only
  digitises (ADC) the already keyed frame.
With `align_faces: true` the simulated stage first aligns each plain face crop to the 5-point template
(hardware.face_align.FrameAligner): alignment needs the plain light, which only the simulation holds.
`check()` never raises: it returns a `Health` whose `reason` is an alarm reason of edge.egress.
Each kind has its `key_stage:` config class beside it, registered in KEY_STAGES (type -> config, factory).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base.errors import KeycamError
from base.schema import POSITIVE, FieldError, FilePath, Registry, Section, setting
from hardware.digitise import model_input
from hardware.errors import FaceplateError, KeyStageClosed, KeyStageError
from hardware.face_align import FrameAligner
from hardware.faceplate_state import WRONG_ID
from hardware.preadc import PreADCStage, SensorModel, adc


@dataclass(frozen=True, kw_only=True)
class KeyStageConfig(Section):
    """What every `key_stage:` section has: its type, the health check period and the fail-closed
    retry back-off (initial, doubling to max)."""

    type: str
    align_faces: bool = False                # align each plain face crop to hardware.face_align.TEMPLATE before the key
    health_interval_s: float = setting(1.0, rule=POSITIVE)   # how often the key stage is re-checked while running
    retry_initial_s: float = setting(0.5, rule=POSITIVE)
    retry_max_s: float = setting(30.0, rule=POSITIVE)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retry_max_s < self.retry_initial_s:
            raise FieldError("retry_max_s", "must be >= retry_initial_s")


@dataclass(frozen=True, kw_only=True)
class SimulatedKeyStageConfig(KeyStageConfig):
    """`key_stage: {type: simulated}`: the simulated pre-ADC stage with the device's sensor key file."""

    sensor_key: FilePath                     # keys.factors.Key (or a KeySet whose sensor key is used)
    sensor: SensorModel = setting(default_factory=SensorModel)    # noise, ADC and optics parameters


@dataclass(frozen=True, kw_only=True)
class FaceplateKeyStageConfig(KeyStageConfig):
    """`key_stage: {type: faceplate}`: a physical faceplate on a serial actuator."""

    port: str                                # serial port of the actuator
    expected_id: str                         # id of the faceplate that must be engaged
    baudrate: int = setting(115200, rule=POSITIVE)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.align_faces:
            raise FieldError("align_faces", "a faceplate keys the light before the sensor, so there is no plain frame "
                                            "to align: remove align_faces (frame the faces in the optics) or use "
                                            "key_stage type simulated")


@dataclass(frozen=True)
class KeyStageContext:
    """What building a key stage needs beside its config: the model's sensor fingerprint and how to
    read the (possibly sealed) sensor key file."""

    expected_fingerprint: str
    read: Callable[[Path], bytes] = Path.read_bytes


@dataclass(frozen=True)
class Health:
    """Result of a key-stage check; `reason` is an egress alarm reason when not ok."""

    ok: bool
    reason: str = ""
    detail: str = ""


HEALTHY = Health(True)


class KeyStage(ABC):
    """Keys (or checks the keying of) raw frames and digitises them."""

    kind = "key stage"
    per_model = True          # False: one instance serves every model generation (one physical actuator)

    @abstractmethod
    def check(self) -> Health:
        """Re-check that the right key is in place."""

    @abstractmethod
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Float linear frame in [0, 1] -> keyed ADC frame; raises KeyStageError when not possible."""

    def close(self) -> None:
        """Release hardware."""


def parse_sensor_key(blob: bytes, what: str):
    """Parse clear sensor key bytes (keys.factors.Key, or a KeySet whose sensor key is used)."""
    from keys.factors import Key, KeyFileError
    from keys.keyset import KeySet
    try:
        return Key.from_bytes(blob, f"sensor key {what}")
    except KeyFileError as key_exc:
        try:
            return KeySet.from_bytes(blob, f"key set {what}").sensor
        except KeyFileError:
            raise key_exc from None


def load_sensor_key(path: Path):
    """Read a clear sensor key file (the public demo device, research tools)."""
    return parse_sensor_key(Path(path).read_bytes(), str(path))


class SimulatedKeyStage(KeyStage):
    """The simulated pre-ADC stage with the sensor key from `sensor_key_path`."""

    kind = "simulated"

    def __init__(self, sensor_key_path: str | Path, expected_fingerprint: str, sensor: SensorModel | None = None,
                 read: Callable[[Path], bytes] = Path.read_bytes, align_faces: bool = False):
        """`read` returns the key file's clear bytes (the service opens sealed files with it); `align_faces`
        aligns each plain frame to the 5-point template before the key (raises AlignmentUnavailable
        without dlib)."""
        self.path = Path(sensor_key_path)
        self.expected = expected_fingerprint
        self.read = read
        self.sensor_model = sensor if sensor is not None else SensorModel()
        self._stage: PreADCStage | None = None
        self.fingerprint = ""
        self.aligner = FrameAligner() if align_faces else None

    @classmethod
    def from_config(cls, cfg: SimulatedKeyStageConfig, ctx: KeyStageContext) -> SimulatedKeyStage:
        """The stage a validated `key_stage:` section of type simulated describes."""
        return cls(cfg.sensor_key, ctx.expected_fingerprint, cfg.sensor, read=ctx.read, align_faces=cfg.align_faces)

    @property
    def key_size(self) -> int | None:
        """Values per frame the loaded sensor key keys (None until a healthy check loaded one)."""
        return self._stage.sensor_key.size if self._stage is not None else None

    def check(self) -> Health:
        if not self.expected:
            self._stage = None
            return Health(False, "sensor_key_mismatch", "the model carries no sensor_fingerprint metadata")
        try:
            key = parse_sensor_key(self.read(self.path), str(self.path))
        except FileNotFoundError:
            self._stage = None
            return Health(False, "sensor_key_missing", f"sensor key file {self.path} is missing")
        except (OSError, KeycamError) as exc:
            self._stage = None
            return Health(False, "key_stage_error", f"sensor key {self.path} unreadable: {exc}")
        if key.fingerprint != self.expected:
            self._stage = None
            return Health(False, "sensor_key_mismatch",
                          f"sensor key {key.fingerprint[:12]} does not match the model's {self.expected[:12]}")
        if self._stage is None or key.fingerprint != self.fingerprint:
            self._stage, self.fingerprint = PreADCStage(key, self.sensor_model), key.fingerprint
        return HEALTHY

    def __call__(self, image: np.ndarray) -> np.ndarray:
        stage = self._stage
        if stage is None:
            raise KeyStageClosed("sensor key not loaded or not matching the model: refusing to digitise")
        if self.aligner is not None:
            image = self.aligner(image)       # on the plain light, before the key: a keyed frame has no landmarks
        return model_input(stage(image), self.sensor_model.bits)


class FaceplateKeyStage(KeyStage):
    """A physical faceplate on a serial actuator; frames arrive optically keyed and are only digitised."""

    kind = "faceplate"
    per_model = False

    def __init__(self, port: str, expected_id: str, baudrate: int = 115200, bits: int = 8):
        self.port, self.expected_id, self.baudrate, self.bits = port, expected_id, baudrate, bits
        self._faceplate = None
        self._healthy = False

    @classmethod
    def from_config(cls, cfg: FaceplateKeyStageConfig, ctx: KeyStageContext) -> FaceplateKeyStage:
        """The stage a validated `key_stage:` section of type faceplate describes."""
        return cls(cfg.port, cfg.expected_id, cfg.baudrate)

    def actuator(self):
        """The actuator driver (hardware.faceplate.SerialFaceplate), opening the port if needed."""
        from hardware.faceplate import SerialFaceplate
        if self._faceplate is None:
            self._faceplate = SerialFaceplate(self.port, baudrate=self.baudrate)
        return self._faceplate

    def check(self) -> Health:
        health = self._check()
        self._healthy = health.ok           # set once the answer is known: no false error mid-check
        return health

    def _check(self) -> Health:
        try:
            state = self.actuator().status()
        except FaceplateError as exc:
            self.close()
            return Health(False, "faceplate_unreachable", str(exc))
        problems = state.problems(self.expected_id)
        if problems:
            reason = "faceplate_wrong_id" if problems[0].kind == WRONG_ID else "faceplate_not_engaged"
            return Health(False, reason, "; ".join(p.message for p in problems))
        return HEALTHY

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not self._healthy:
            raise KeyStageError("faceplate not verified engaged: refusing to digitise")
        return model_input(adc(image, self.bits), self.bits)

    def close(self) -> None:
        self._healthy = False
        if self._faceplate is not None:
            self._faceplate.close()
            self._faceplate = None


KEY_STAGES: Registry[KeyStage] = Registry("key stage")
KEY_STAGES.register("simulated", SimulatedKeyStageConfig, SimulatedKeyStage.from_config)
KEY_STAGES.register("faceplate", FaceplateKeyStageConfig, FaceplateKeyStage.from_config)
