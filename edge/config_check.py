"""Checks of a device config beyond edge/config.py's own sections, shared by every place a config
enters (run, `config check`, export, build, provision): the hardware sections (camera,
key_stage.sensor) against their modules' typed schemas, parsed with edge.config.parse_section.
"""
from __future__ import annotations

from edge.config import DeviceConfig


def check_sections(cfg: DeviceConfig) -> None:
    """Validate the free-form hardware sections strictly: unknown keys, types and ranges."""
    from hardware.camera import camera_config
    from hardware.preadc import SensorModel
    camera_config(cfg.camera, "camera")
    SensorModel.from_dict(cfg.key_stage.sensor, "key_stage.sensor")
