"""base.schema: typed config sections, field rules, registries - each mistake is one line naming the key path."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest

from base.errors import ConfigError
from base.schema import POSITIVE, FieldError, FilePath, Registry, Section, between, parse_section, setting


@dataclass(frozen=True)
class Inner(Section):
    level: int = setting(1, rule=between(1, 3))


@dataclass(frozen=True)
class Small(Section):
    type: str
    rate: float = setting(1.0, rule=POSITIVE)


@dataclass(frozen=True)
class Big(Section):
    type: str
    inner: Inner = setting(default_factory=Inner)
    lo: int = 0
    hi: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hi < self.lo:
            raise FieldError("hi", "must be >= lo")


THINGS: Registry[str] = Registry("thing")
THINGS.register("small", Small, lambda cfg, suffix: f"small at {cfg.rate}{suffix}")
THINGS.register("big", Big, lambda cfg, suffix: f"big level {cfg.inner.level}{suffix}")


@dataclass(frozen=True)
class Top(Section):
    name: str
    things: list[Annotated[Small | Big, THINGS]]
    key: FilePath | None = None
    origin: Path = setting(Path("."), internal=True)


def test_a_valid_section_parses_into_typed_records(tmp_path):
    (tmp_path / "k.bin").write_bytes(b"k")
    top = parse_section({"name": "a", "key": "k.bin", "things": [{"type": "small", "rate": 2},
                                                                 {"type": "big", "inner": {"level": 3}}]},
                        Top, "", tmp_path)
    assert top.key == str(tmp_path / "k.bin") and isinstance(top.things[0].rate, float)
    assert [THINGS.build(t, "!") for t in top.things] == ["small at 2.0!", "big level 3!"]


@pytest.mark.parametrize("data, message", [
    ({"name": "a", "things": [{"type": "small", "rate": 0}]}, r"^things\[0\].rate: must be > 0, got 0$"),
    ({"name": "a", "things": [{"type": "big", "inner": {"level": 9}}]}, r"^things\[0\].inner.level: must be 1..3"),
    ({"name": "a", "things": [{"type": "big", "lo": 5, "hi": 1}]}, r"^things\[0\].hi: must be >= lo$"),
    ({"name": "a", "things": [{"type": "huge"}]}, r"^things\[0\].type: unknown thing type 'huge'; must be one of small, big$"),
    ({"name": "a", "things": [{"rate": 1}]}, r"^things\[0\].type: required key is missing \(one of small, big\)$"),
    ({"name": "a", "things": [{"type": "small", "level": 1}]}, r"^things\[0\]: unknown key level \(allowed: type, rate\)$"),
    ({"name": "a", "things": "small"}, r"^things: expected a list"),
    ({"name": None, "things": []}, r"^name: required key is missing$"),
    ({"name": "a", "things": [], "origin": "/"}, r"^unknown key origin \(allowed: name, things, key\)$"),   # internal
    ({"name": "a", "things": [], "key": "absent.bin"}, r"^key: file not found: .*absent.bin$"),
    ({"name": 3, "things": []}, r"^name: expected a string, got 3$"),
])
def test_each_mistake_is_one_line_naming_the_key(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_section(data, Top, "", tmp_path)
    assert "\n" not in str(err.value)


def test_rules_also_hold_for_directly_built_sections():
    with pytest.raises(FieldError, match="rate: must be > 0"):
        Small(type="small", rate=-1.0)
    with pytest.raises(FieldError, match="hi: must be >= lo"):
        Big(type="big", lo=2, hi=1)


def test_registry_refuses_bad_registrations_and_foreign_configs():
    with pytest.raises(TypeError, match="registered twice"):
        THINGS.register("small", Small, str)
    with pytest.raises(TypeError, match="needs a `type` field"):
        THINGS.register("inner", Inner, str)
    with pytest.raises(ConfigError, match="not a thing config"):
        THINGS.build(Inner())
    with pytest.raises(ConfigError, match="not a thing config"):
        THINGS.build(Big(type="small"))          # registered under another type
