"""Errors raised by the hardware layer; all are KeycamError subclasses with actionable messages."""
from __future__ import annotations

from base.errors import KeycamError


class CameraError(KeycamError):
    """The camera cannot be opened, was closed, or delivered something unusable."""


class CameraTimeout(CameraError):
    """No frame arrived within the read timeout (the camera stopped delivering)."""


class CameraDisconnected(CameraError):
    """The camera disappeared mid-stream."""


class CameraFrameError(CameraError):
    """A frame had the wrong shape, dtype or value range."""


class CameraEndOfStream(CameraError):
    """A non-looping replay source has no more frames."""


class KeyStageError(KeycamError):
    """The pre-ADC key stage cannot key a frame (no key, size mismatch, bad input)."""


class KeyStageClosed(KeyStageError):
    """The stage's last check failed; whoever ran the check reports why, the frame is only dropped."""


class FaceplateError(KeycamError):
    """Base class for faceplate actuator failures."""


class FaceplateTimeout(FaceplateError):
    """No valid reply within the timeout after every retry, or a motion did not finish in time."""


class FaceplateProtocolError(FaceplateError):
    """Replies were corrupt or malformed on every attempt."""


class FaceplateCommandError(FaceplateError):
    """The actuator answered with an error code."""

    def __init__(self, message: str, code: int, name: str):
        super().__init__(message)
        self.code = code
        self.name = name


class FaceplateMotorError(FaceplateError):
    """The actuator reports a motor fault (stall) after a motion command."""


class FaceplateDisconnected(FaceplateError):
    """The serial link went away (unplugged, emulator exited)."""


class FaceplateMismatch(FaceplateError):
    """The fitted faceplate or its position is not the one the device configuration expects."""
