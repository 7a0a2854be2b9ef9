"""Typed records of the vault: a device (`DeviceRecord`) and its key-set generations (`Generation`).

Each record reads and writes the vault's JSON form (`from_json` / `to_json`); reading checks every
known field's type and the states, so a damaged record is one VaultError naming the field instead of
a KeyError later. Fields this keycam does not know are kept in `extra` and written back unchanged, so
opening and saving a vault loses nothing. Binary fields (secrets, key sets, sealed models, canary
frames) stay base64 text, as in the file.

Key-set generation states: 'pending' after rotate until a deploy confirms it, then 'active'; the
generation it replaced becomes 'retired'; revoke marks every generation 'revoked'.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from base.clock import now_iso
from base.ids import is_valid_id
from keys.fields import VaultError, b64d

if typing.TYPE_CHECKING:
    from keys.keyset import KeySet

GEN_STATES = ("active", "pending", "retired", "revoked")
USABLE_GEN_STATES = ("active", "pending")
DEVICE_STATES = ("active", "revoked")
SECRET_FIELDS = ("secret", "keyset", "model_sealed", "canary", "model_int8")   # never shown without --reveal

R = TypeVar("R")
_field_types = functools.cache(typing.get_type_hints)      # a record class -> its fields' resolved types


def _check(value: Any, kind: Any, where: str) -> Any:
    """`value` read as the annotated type `kind` (str, int, bool, dict, list[X], X | None, a record)."""
    if kind is Any:
        return value
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        return _check(value, next(o for o in options if o is not type(None)), where)
    if origin is list:
        if not isinstance(value, list):
            raise VaultError(f"vault record {where} must be a list, got {type(value).__name__}")
        (item,) = typing.get_args(kind)
        return [_check(v, item, f"{where}[{n}]") for n, v in enumerate(value)]
    if dataclasses.is_dataclass(kind):
        return kind.from_json(value, where)
    base = origin or kind
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise VaultError(f"vault record {where} must be {base.__name__}, got {type(value).__name__}")
    return value


def _from_json(cls: type[R], doc: Any, where: str) -> R:
    """A record dataclass from its JSON object: known fields checked, unknown ones kept in `extra`."""
    if not isinstance(doc, dict):
        raise VaultError(f"vault record {where} must be a JSON object, got {type(doc).__name__}")
    hints = _field_types(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
    values = {}
    for name, spec in known.items():
        if name in doc:
            values[name] = _check(doc[name], hints[name], f"{where}.{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise VaultError(f"vault record {where} lacks the field {name!r} (the vault is damaged)")
    return cls(**values, extra={k: v for k, v in doc.items() if k not in known})


def _to_json(record: Any) -> dict:
    """A record's JSON object: fields that are None are left out, `extra` goes back in."""
    doc = dict(record.extra)
    for spec in dataclasses.fields(record):
        value = getattr(record, spec.name)
        if spec.name == "extra" or value is None:
            continue
        if dataclasses.is_dataclass(value):
            value = value.to_json()
        elif isinstance(value, list):
            value = [v.to_json() if dataclasses.is_dataclass(v) else v for v in value]
        doc[spec.name] = value
    return doc


def source_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (names and bytes, in sorted order)."""
    path, h = Path(path), hashlib.sha256()
    if not path.is_dir():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@dataclass
class ModelSource:
    """Where a base model (or its calibration frames: a file or a folder) came from: the resolved path and
    its digest (checked before it is used again)."""
    path: str
    sha256: str
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, model: str | Path) -> ModelSource:
        """The source record of the file or folder at `model`."""
        path = Path(model)
        return cls(str(path.resolve()), source_digest(path))

    def unchanged(self) -> bool:
        """True when the recorded file or folder still exists with the recorded content."""
        path = Path(self.path)
        return path.exists() and source_digest(path) == self.sha256

    @classmethod
    def from_json(cls, doc: Any, where: str) -> ModelSource:
        return _from_json(cls, doc, where)

    def to_json(self) -> dict:
        return _to_json(self)


@dataclass
class Generation:
    """One key set of a device with its keyed model (sealed to the device key) and canary frames."""
    generation: int
    state: str
    created: str
    secret: str
    keyset: str
    profile: str
    output_encryption: bool
    key_fingerprint: str
    sensor_fingerprint: str
    model_id: str
    labels: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    model_source: ModelSource | None = None     # older vaults: only the device's
    calibration: ModelSource | None = None      # int8 calibration frames given by the user (None: the dataset's)
    model_sealed: str | None = None
    model_sha256: str | None = None
    canary: str | None = None                   # older vaults: none (made when their clear model is sealed)
    model_int8: str | None = None               # older vaults: the clear model, sealed on the next write
    confirmed: str | None = None
    retired: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Generation:
        gen = _from_json(cls, doc, where)
        if gen.state not in GEN_STATES:
            raise VaultError(f"vault record {where}.state is {gen.state!r}, not one of {', '.join(GEN_STATES)}")
        return gen

    def to_json(self) -> dict:
        return _to_json(self)

    @property
    def usable(self) -> bool:
        """Active or pending: a bundle or an export can still be made from it."""
        return self.state in USABLE_GEN_STATES

    def key_set(self) -> KeySet:
        """The generation's key set (sensor, model and output keys)."""
        from keys.keyset import KeySet  # numpy/scipy: only for the commands that use key material
        return KeySet.from_bytes(b64d(self.keyset, "keyset"))

    def secret_bytes(self) -> bytes:
        """The 32-byte secret the key set and keyed model were made from."""
        return b64d(self.secret, "secret")


@dataclass
class DeviceRecord:
    """A provisioned device: identity, hardware, device key, config template and key-set generations."""
    device_id: str
    created: str
    state: str
    hardware: str
    faceplate: bool
    device_public: str
    model_source: ModelSource
    generations: list[Generation]
    device_private: str | None = None           # a vault-made key pair, until the first export
    config: dict | None = None
    revoked: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Any, where: str) -> DeviceRecord:
        dev = _from_json(cls, doc, where)
        if not is_valid_id(dev.device_id):
            raise VaultError(f"vault record {where}.device_id {dev.device_id!r} is not a valid device id")
        if dev.state not in DEVICE_STATES:
            raise VaultError(f"vault record {where}.state is {dev.state!r}, not one of {', '.join(DEVICE_STATES)}")
        if not dev.generations:
            raise VaultError(f"vault record {where} has no key-set generation (the vault is damaged)")
        return dev

    def to_json(self) -> dict:
        return _to_json(self)

    # ---- finding generations ------------------------------------------------------------------
    def generation(self, state: str = "active", fingerprint: str | None = None) -> Generation:
        """One key-set generation: by key fingerprint (prefix ok) or the newest in `state`."""
        if fingerprint:
            hits = [g for g in self.generations if g.key_fingerprint.startswith(fingerprint)]
            if len(hits) != 1:
                raise VaultError(f"device {self.device_id!r}: {len(hits)} key sets match fingerprint {fingerprint!r}")
            return hits[0]
        hits = [g for g in self.generations if g.state == state]
        if not hits:
            raise VaultError(f"device {self.device_id!r} has no {state} key set"
                             + (" (it is revoked)" if self.state == "revoked" else ""))
        return hits[-1]

    def find(self, fingerprint: str) -> Generation | None:
        """The generation with exactly this key fingerprint, or None."""
        return next((g for g in self.generations if g.key_fingerprint == fingerprint), None)

    def require_usable(self) -> DeviceRecord:
        """This record, refusing a revoked device."""
        if self.state == "revoked":
            raise VaultError(f"device {self.device_id!r} is revoked; provision a new device id instead")
        return self

    def select(self, selector: str) -> Generation:
        """A generation by 'active', 'pending' or key fingerprint (prefix); retired/revoked ones are refused."""
        self.require_usable()
        if selector in ("active", "pending"):
            gen = self.generation(state=selector)
        else:
            gen = self.generation(fingerprint=selector)
        if not gen.usable:
            raise VaultError(f"key set {gen.key_fingerprint[:16]} of {self.device_id!r} is {gen.state}")
        return gen

    # ---- state changes --------------------------------------------------------------------------
    def require_rotatable(self) -> DeviceRecord:
        """This record, refusing a revoked device or one whose pending key set is not yet confirmed."""
        self.require_usable()
        if any(g.state == "pending" for g in self.generations):
            raise VaultError(f"{self.device_id} already has a pending key set; deploy and confirm it first")
        return self

    def add_generation(self, gen: Generation, source: ModelSource) -> None:
        """Append a new generation made from the base model `source` (a rotation)."""
        self.require_rotatable()
        self.generations.append(gen)
        self.model_source = source

    def confirm(self, fingerprint: str) -> bool:
        """Promote the pending generation with this key fingerprint to active (the old one is retired).

        Returns False when that generation is already active (nothing to do)."""
        self.require_usable()
        gen = self.generation(fingerprint=fingerprint)
        if gen.state == "active":
            return False
        if gen.state != "pending":
            raise VaultError(f"device {self.device_id!r}: key set {fingerprint[:16]} is {gen.state}, not pending")
        for other in self.generations:
            if other.state == "active":
                other.state, other.retired = "retired", now_iso()
        gen.state, gen.confirmed = "active", now_iso()
        return True

    def revoke(self) -> None:
        """Revoke the device and every generation: no bundle or export can be made for it any more."""
        if self.state == "revoked":
            raise VaultError(f"device {self.device_id!r} is already revoked")
        self.state, self.revoked = "revoked", now_iso()
        for gen in self.generations:
            gen.state = "revoked"

    # ---- views ----------------------------------------------------------------------------------
    def summary(self) -> dict:
        """One row of `keys list`: state, hardware, profile and model of the active key set, active and
        pending fingerprints."""
        def newest(state: str) -> str | None:
            hits = [g.key_fingerprint for g in self.generations if g.state == state]
            return hits[-1] if hits else None
        active = next((g for g in self.generations if g.state == "active"), self.generations[-1])
        return {"device_id": self.device_id, "state": self.state, "hardware": self.hardware,
                "faceplate": self.faceplate, "profile": active.profile, "model_id": active.model_id,
                "active": newest("active"), "pending": newest("pending")}

    def public_view(self, reveal: bool) -> dict:
        """The record as `keys show` reports it: no secret fields; with `reveal` the secrets as hex and
        the vault-held device private key."""
        doc = self.to_json()
        private = doc.pop("device_private", None)
        for gen in doc["generations"]:
            for name in SECRET_FIELDS:
                value = gen.pop(name, None)
                if reveal and name == "secret":
                    gen["secret_hex"] = b64d(value, name).hex()
        if reveal and private:
            doc["device_private"] = private
        return doc
