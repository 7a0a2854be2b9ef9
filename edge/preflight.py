"""Start-up check that a device's camera, key stage and model fit together.

A misconfiguration that cannot heal while the service runs (frames of another size than the model
takes or the sensor key keys, frames that face alignment cannot align, a sensor key file that is corrupt
or belongs to another model) is a ConfigError at start-up: one clear line and a non-zero exit instead
of failing closed forever.
Faults that can heal (a missing key file a deploy is about to write, an unreachable faceplate) are
left to the service's fail-closed retry.
"""
from __future__ import annotations

import math

from base.errors import ConfigError
from edge.keystage import Health, SimulatedKeyStage
from edge.pipeline import ModelContext
from hardware.errors import CameraFrameError
from hardware.face_align import check_frame_shape

_PERMANENT = ("sensor_key_mismatch", "key_stage_error")    # a key file that is there but wrong


def check_pairing(ctx: ModelContext, frame_shape: tuple[int, ...]) -> Health:
    """Check the loaded model/key pair against the camera's frame shape; return the key stage's first
    health (to open or keep closed the gate), or raise ConfigError for a pairing that can never work."""
    values = math.prod(frame_shape)
    first = ctx.preprocess.model if ctx.preprocess is not None else ctx.model
    what = "preprocess model" if ctx.preprocess is not None else "model"
    if first.input_size != values:
        raise ConfigError(f"the camera delivers frames of shape {tuple(frame_shape)} ({values} values) but the "
                          f"{what} takes {first.input_shape} ({first.input_size} values): fix camera "
                          "(size or source) or deploy the model made for this camera")
    if isinstance(ctx.key_stage, SimulatedKeyStage) and ctx.key_stage.aligner is not None:
        try:
            check_frame_shape(tuple(frame_shape))
        except CameraFrameError as exc:
            raise ConfigError(f"key_stage.align_faces: {exc}; turn align_faces off for this camera") from None
    health = ctx.key_stage.check()
    if isinstance(ctx.key_stage, SimulatedKeyStage):
        if not health.ok and health.reason in _PERMANENT:
            raise ConfigError(f"key_stage.sensor_key: {health.detail}: deploy the sensor key made with "
                              "this model (keycam keys export / deploy push)")
        if health.ok and ctx.key_stage.key_size != values:
            raise ConfigError(f"key_stage.sensor_key {ctx.key_stage.path} keys frames of {ctx.key_stage.key_size} "
                              f"values but the camera delivers {tuple(frame_shape)} ({values} values)")
    return health
