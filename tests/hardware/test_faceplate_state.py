"""FaceplateStatus / FaceplateIdentity decoded from reply fields, and the one `problems` check."""
from __future__ import annotations

import pytest

from hardware.errors import FaceplateProtocolError
from hardware.faceplate_state import (
    FAULT,
    MOVING,
    NOT_ENGAGED,
    WRONG_ID,
    WRONG_POSITION,
    FaceplateIdentity,
    FaceplateStatus,
)

ENGAGED = {"id": "FP-0002", "fw": "1.2.0", "pos": "1", "eng": "1", "mov": "0", "homed": "1", "err": "0"}


def _status(**changes: str) -> FaceplateStatus:
    return FaceplateStatus.from_fields({**ENGAGED, **changes})


def _kinds(state: FaceplateStatus, expected: str = "FP-0002", position: int | None = None) -> list[str]:
    return [p.kind for p in state.problems(expected, position)]


def test_status_fields_decode_into_a_typed_record():
    assert _status() == FaceplateStatus(faceplate_id="FP-0002", firmware="1.2.0", position=1, engaged=True,
                                        moving=False, homed=True, error=None, error_code=0)
    unhomed = _status(id="-", pos="-1", homed="0", err="9")
    assert (unhomed.faceplate_id, unhomed.position, unhomed.homed, unhomed.error) == (None, None, False, "STALL")
    assert _status(err="42").error == "E42"
    assert FaceplateIdentity.from_fields({"unit": "ACT-1", "fw": "1.2.0", "slots": "4", "id": "-"}) == \
        FaceplateIdentity(unit="ACT-1", firmware="1.2.0", slots=4, faceplate_id=None)


@pytest.mark.parametrize("field", ["pos", "eng", "mov", "homed", "err"])
def test_a_missing_or_non_integer_status_field_is_a_protocol_error(field):
    with pytest.raises(FaceplateProtocolError, match=repr(field)):
        FaceplateStatus.from_fields({k: v for k, v in ENGAGED.items() if k != field})
    with pytest.raises(FaceplateProtocolError, match=repr(field)):
        _status(**{field: "x"})
    with pytest.raises(FaceplateProtocolError, match="'slots'"):
        FaceplateIdentity.from_fields({"unit": "ACT-1", "slots": "four"})


def test_the_expected_faceplate_engaged_without_fault_has_no_problem():
    assert _status().problems("FP-0002") == []
    assert _status().problems("FP-0002", position=1) == []


def test_each_problem_is_reported_with_its_kind_and_message():
    cases = [
        (_status(err="9"), FAULT, "actuator is in error STALL"),
        (_status(mov="1"), MOVING, "actuator is moving"),
        (_status(id="FP-0003"), WRONG_ID, "faceplate FP-0003 is fitted, the configuration expects FP-0002"),
        (_status(id="-"), WRONG_ID, "faceplate none is fitted, the configuration expects FP-0002"),
        (_status(eng="0"), NOT_ENGAGED, "faceplate is not engaged"),
    ]
    for state, kind, message in cases:
        [problem] = state.problems("FP-0002")
        assert (problem.kind, problem.message) == (kind, message)
    [problem] = _status().problems("FP-0002", position=2)
    assert (problem.kind, problem.message) == (WRONG_POSITION, "turret at position 1, expected 2")
    assert _kinds(_status(pos="-1", homed="0"), position=0) == [WRONG_POSITION]


def test_every_problem_is_listed_in_a_fixed_order():
    state = _status(id="-", pos="-1", eng="0", mov="1", homed="0", err="9")
    assert _kinds(state, position=1) == [FAULT, MOVING, WRONG_ID, WRONG_POSITION, NOT_ENGAGED]


def test_the_emulated_firmware_reports_what_the_host_decodes():
    from hardware.faceplate_firmware import Firmware, FirmwareConfig

    firmware = Firmware(FirmwareConfig())
    state = FaceplateStatus.from_fields({k: str(v) for k, v in firmware.status_fields().items()})
    assert (state.faceplate_id, state.position, state.homed) == (None, None, False)
    assert _kinds(state, "FP-0001") == [WRONG_ID, NOT_ENGAGED]
