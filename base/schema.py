"""Typed config sections: a dataclass's type hints, defaults and per-field rules are its schema.

`parse_section(data, cls, where, base)` builds dataclass `cls` from a mapping (a YAML section):
unknown keys, missing required keys, wrong types and values a field's rule refuses each raise one
ConfigError naming the key path (`camera.faults.stall_after: expected an integer, got '3'`).
Nested dataclasses, `X | None`, `list[X]` and registry-typed sections (`Annotated[Base, REGISTRY]`,
dispatched on their `type` key) are parsed recursively. A hint class with a `from_config(value,
where, base)` classmethod parses its own values (FilePath, DirPath: resolved against `base`, the
config file's folder).

Rules live beside their fields: `top_k: int = setting(3, rule=between(1, 10))`. A section that
derives from `Section` checks its rules in `__post_init__`, so a directly constructed section is
held to the same rules as a parsed one.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from base.errors import ConfigError

T = TypeVar("T")


class FilePath(str):
    """A path to an existing file, relative to the config file's folder."""

    @classmethod
    def from_config(cls, value: object, where: str, base: Path) -> FilePath:
        path = _resolve(value, where, base, "a file path")
        if not path.is_file():
            raise ConfigError(f"{where}: file not found: {path}")
        return cls(os.path.abspath(path))          # symlinks kept: A/B slot flips are seen


class DirPath(str):
    """A path to an existing directory, relative to the config file's folder."""

    @classmethod
    def from_config(cls, value: object, where: str, base: Path) -> DirPath:
        path = _resolve(value, where, base, "a directory path")
        if not path.is_dir():
            raise ConfigError(f"{where}: directory not found: {path}")
        return cls(os.path.normpath(path))


def _resolve(value: object, where: str, base: Path, what: str) -> Path:
    """A non-empty path string, made absolute against `base` (the config file's folder)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(os.path.abspath(base / path))


def resolve_path(value: object, where: str, base: Path) -> Path:
    """A path named in a config (existence not checked), made absolute against `base`."""
    return _resolve(value, where, base, "a path")


@dataclass(frozen=True)
class Rule:
    """What a field's value must satisfy: `test(value)` is true, else `{key}: {text}, got {value}`."""

    test: Callable[[Any], bool]
    text: str


POSITIVE = Rule(lambda v: v > 0, "must be > 0")
NON_NEGATIVE = Rule(lambda v: v >= 0, "must be >= 0")


def between(lo: float, hi: float, note: str = "") -> Rule:
    """lo <= value <= hi."""
    return Rule(lambda v: lo <= v <= hi, f"must be {lo}..{hi}" + (f" ({note})" if note else ""))


def setting(default: object = dataclasses.MISSING, *, rule: Rule | None = None,
            default_factory: Callable[[], object] | Any = dataclasses.MISSING, internal: bool = False) -> Any:
    """A dataclass field with a value rule (checked on parse and in Section.__post_init__);
    `internal` fields are not config keys (e.g. where the config came from)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"rule": rule, "internal": internal})


class FieldError(ConfigError):
    """A section's field is invalid; parse_section prefixes the section's key path."""

    def __init__(self, name: str, text: str):
        super().__init__(f"{name}: {text}")
        self.name, self.text = name, text


class Section:
    """Mixin of config dataclasses: __post_init__ enforces every field's rule (None is not checked)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rule, value = f.metadata.get("rule"), getattr(self, f.name)
            if rule is not None and value is not None and not rule.test(value):
                raise FieldError(f.name, f"{rule.text}, got {value!r}")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    config: type
    factory: Callable[..., T]


class Registry(Generic[T]):
    """Type name -> (config class, factory) of one family (cameras, key stages, sinks).

    A family's config classes each have a `type: str` field; `parse` picks the class by the
    section's `type` key, `build` calls the factory registered for a parsed config's type."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, _Entry[T]] = {}

    def register(self, name: str, config: type, factory: Callable[..., T]) -> None:
        """Add type `name`: sections of that type parse into `config`; `factory(config, ...)` builds it."""
        if "type" not in {f.name for f in dataclasses.fields(config)}:
            raise TypeError(f"{config.__name__} needs a `type` field to be registered as a {self.kind}")
        if name in self._entries:
            raise TypeError(f"{self.kind} type {name!r} is registered twice")
        self._entries[name] = _Entry(config, factory)

    @property
    def names(self) -> tuple[str, ...]:
        """The registered type names, in registration order."""
        return tuple(self._entries)

    def parse(self, data: object, where: str, base: Path = Path(".")) -> Any:
        """Validate a section by its `type` key into that type's config class."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {data!r}")
        name = data.get("type")
        choices = ", ".join(self.names)
        if name is None:
            raise ConfigError(f"{where}.type: required key is missing (one of {choices})")
        if name not in self._entries:
            raise ConfigError(f"{where}.type: unknown {self.kind} type {name!r}; must be one of {choices}")
        return parse_section(data, self._entries[name].config, where, base)

    def build(self, config: object, *args: object) -> T:
        """Build the object a parsed config describes: its type's factory(config, *args)."""
        name = getattr(config, "type", None)
        if name not in self._entries or not isinstance(config, self._entries[name].config):
            raise ConfigError(f"not a {self.kind} config: {config!r}")
        return self._entries[name].factory(config, *args)

    def create(self, data: object, where: str, *args: object, base: Path = Path(".")) -> T:
        """parse, then build."""
        return self.build(self.parse(data, where, base), *args)


# scalar type -> (what the error message calls it, the check)
_SCALARS: dict[object, tuple[str, Callable[[object], bool]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def _coerce(value: object, hint: object, where: str, base: Path) -> object:
    """Check `value` against a type hint (parsing nested sections); raise ConfigError otherwise."""
    if typing.get_origin(hint) is typing.Annotated:
        registry = next((m for m in hint.__metadata__ if isinstance(m, Registry)), None)
        if registry is not None:
            return registry.parse(value, where, base)
        hint = typing.get_args(hint)[0]
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]", base) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return parse_section(value, hint, where, base)
    if hasattr(hint, "from_config"):
        return hint.from_config(value, where, base)
    what, ok = _SCALARS[hint]
    if not ok(value):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return float(value) if hint is float else value


def parse_section(data: object, cls: type[T], where: str, base: Path = Path(".")) -> T:
    """Build dataclass `cls` from a mapping: unknown keys, missing keys and bad values are one
    ConfigError naming the key path; relative file paths are resolved against `base`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ConfigError(f"{where + ': ' if where else ''}unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                          f"(allowed: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in data or (data[name] is None and required):
            if required:
                raise ConfigError(f"{key}: required key is missing")
            continue
        values[name] = _coerce(data[name], hints[name], key, base)
        rule = f.metadata.get("rule")
        if rule is not None and values[name] is not None and not rule.test(values[name]):
            raise ConfigError(f"{key}: {rule.text}, got {data[name]!r}")
    try:
        return cls(**values)                 # a section's __post_init__ checks what spans fields
    except FieldError as exc:
        raise ConfigError(f"{where}.{exc.name}: {exc.text}" if where else str(exc)) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
