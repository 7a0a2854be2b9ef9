"""Cameras: the interface (base), the replay camera and the Raspberry Pi camera, built from a
device config's `camera:` section through one registry (type name -> config class, factory)."""
from __future__ import annotations

from base.schema import Registry
from hardware.camera.base import Camera, Capture, Frame
from hardware.camera.raspberrypi import Picamera2Camera, Picamera2Config, box_downsample
from hardware.camera.replay import ReplayCamera, ReplayConfig, ReplayFaults, load_replay_source, to_linear_float

CAMERAS: Registry[Camera] = Registry("camera")
CAMERAS.register("replay", ReplayConfig, ReplayCamera.from_config)
CAMERAS.register("picamera2", Picamera2Config, Picamera2Camera.from_config)
CameraConfig = ReplayConfig | Picamera2Config


def make_camera(config: CameraConfig) -> Camera:
    """Build the camera a validated `camera:` section describes (see CAMERAS.parse)."""
    return CAMERAS.build(config)


__all__ = ["CAMERAS", "Camera", "CameraConfig", "Capture", "Frame", "Picamera2Camera", "Picamera2Config",
           "ReplayCamera", "ReplayConfig", "ReplayFaults", "box_downsample", "load_replay_source",
           "make_camera", "to_linear_float"]
