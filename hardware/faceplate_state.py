"""What the faceplate actuator reports, as typed records, and the one check that the expected faceplate
is in the light path (used by `SerialFaceplate.verify` and the device's faceplate key stage)."""
from __future__ import annotations

from dataclasses import dataclass

from hardware.errors import FaceplateProtocolError
from hardware.protocol import EMPTY_SLOT, ERROR_CODES

# kinds of FaceplateProblem, in the order `FaceplateStatus.problems` reports them
FAULT, MOVING, WRONG_ID, WRONG_POSITION, NOT_ENGAGED = "fault", "moving", "wrong_id", "wrong_position", "not_engaged"


@dataclass(frozen=True)
class FaceplateProblem:
    """One reason the actuator's state does not allow capturing: `kind` (FAULT, MOVING, ...) and a message."""

    kind: str
    message: str


@dataclass(frozen=True)
class FaceplateIdentity:
    """The ID reply: actuator unit id, firmware version, number of slots, faceplate in the light path."""

    unit: str | None
    firmware: str | None
    slots: int
    faceplate_id: str | None

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> FaceplateIdentity:
        """Decode ID reply fields; a missing or non-integer `slots` is a FaceplateProtocolError."""
        return cls(unit=fields.get("unit"), firmware=fields.get("fw"), slots=_int(fields, "slots"),
                   faceplate_id=_faceplate(fields.get("id")))


@dataclass(frozen=True)
class FaceplateStatus:
    """The STAT reply (also the reply to HOME, MOVE, ENGAGE, DISENGAGE).

    position is None until homed; error is the fault name (e.g. 'STALL') or None; error_code its code.
    """

    faceplate_id: str | None
    firmware: str | None
    position: int | None
    engaged: bool
    moving: bool
    homed: bool
    error: str | None
    error_code: int

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> FaceplateStatus:
        """Decode status reply fields; a missing or non-integer field is a FaceplateProtocolError."""
        position, code = _int(fields, "pos"), _int(fields, "err")
        return cls(faceplate_id=_faceplate(fields.get("id")), firmware=fields.get("fw"),
                   position=None if position < 0 else position, engaged=_int(fields, "eng") == 1,
                   moving=_int(fields, "mov") == 1, homed=_int(fields, "homed") == 1,
                   error=ERROR_CODES.get(code, (f"E{code}",))[0] if code else None, error_code=code)

    def problems(self, expected_id: str, position: int | None = None) -> list[FaceplateProblem]:
        """Why faceplate `expected_id` is not engaged (at `position`, if given) without fault; [] when it is."""
        found = []
        if self.error:
            found.append(FaceplateProblem(FAULT, f"actuator is in error {self.error}"))
        if self.moving:
            found.append(FaceplateProblem(MOVING, "actuator is moving"))
        if self.faceplate_id != expected_id:
            found.append(FaceplateProblem(WRONG_ID, f"faceplate {self.faceplate_id or 'none'} is fitted, "
                                                    f"the configuration expects {expected_id}"))
        if position is not None and self.position != position:
            found.append(FaceplateProblem(WRONG_POSITION, f"turret at position {self.position}, expected {position}"))
        if not self.engaged:
            found.append(FaceplateProblem(NOT_ENGAGED, "faceplate is not engaged"))
        return found


def _int(fields: dict[str, str], key: str) -> int:
    try:
        return int(fields[key])
    except (KeyError, ValueError):
        raise FaceplateProtocolError(f"actuator reply lacks an integer {key!r} field: {fields}") from None


def _faceplate(value: str | None) -> str | None:
    return None if value in (None, EMPTY_SLOT) else value
