"""Bundle manifest: what a bundle contains and for which device; parsed and validated on both sides."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from base.errors import KeycamError
from base.ids import check_id

FORMAT = "keycam-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_MANIFEST_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


class BundleError(KeycamError):
    """A bundle is malformed, tampered, unsigned, or not meant for this device."""


def parse_version(text: str) -> tuple[int, ...]:
    """'1.2.3' -> (1, 2, 3, 0); anything else raises BundleError."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise BundleError(f"invalid version {text!r}: use dotted numbers like 1.2.0")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


def check_device_id(device_id: str) -> str:
    """`device_id` if it follows the one id rule (base.ids), else BundleError."""
    return check_id(device_id, "device id", BundleError)


@dataclass
class Manifest:
    """The signed description of a bundle."""
    device_id: str
    version: str
    minimum_version: str
    compatible: list[str]
    files: dict[str, dict]                 # name -> {"sha256", "size"}
    keys: dict = field(default_factory=dict)       # key/sensor fingerprints, model id, profile
    secrets: dict = field(default_factory=dict)    # name -> {"alg", "device_key_id"}: sealed to the device
    health: dict = field(default_factory=dict)     # {"canary": name, "timeout_s": float}
    created: str = ""
    signing_key_id: str = ""

    def to_bytes(self) -> bytes:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.__dict__}
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Manifest:
        """Parse and validate; every malformed field raises BundleError."""
        try:
            doc = json.loads(blob)
        except ValueError as exc:
            raise BundleError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BundleError("not a keycam bundle manifest")
        if doc.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"bundle format version {doc.get('format_version')} is not supported "
                              f"(this agent reads {FORMAT_VERSION})")
        fields = {k: doc.get(k) for k in cls.__dataclass_fields__}
        missing = [k for k in ("device_id", "version", "minimum_version", "compatible", "files") if fields[k] is None]
        if missing:
            raise BundleError(f"manifest lacks {', '.join(missing)}")
        m = cls(**{k: v for k, v in fields.items() if v is not None})
        m.validate()
        return m

    def validate(self) -> None:
        check_device_id(self.device_id)
        parse_version(self.version)
        if parse_version(self.minimum_version) > parse_version(self.version):
            raise BundleError(f"minimum version {self.minimum_version} is above the version {self.version}")
        if not self.compatible or not all(isinstance(c, str) and c for c in self.compatible):
            raise BundleError("manifest 'compatible' must list at least one hardware name")
        if not isinstance(self.files, dict) or not self.files:
            raise BundleError("manifest lists no files")
        for name, spec in self.files.items():
            if not _NAME.match(name) or name in (MANIFEST, SIGNATURE):
                raise BundleError(f"bundle file name {name!r} is not allowed")
            if (not isinstance(spec, dict) or not isinstance(spec.get("size"), int) or spec["size"] < 0
                    or not re.fullmatch(r"[0-9a-f]{64}", str(spec.get("sha256")))):
                raise BundleError(f"manifest entry for {name!r} needs a size and a sha256")
        for name in self.secrets:
            if name not in self.files:
                raise BundleError(f"sealed secret {name!r} is not a bundle file")
        canary = self.health.get("canary")
        if canary is not None and canary not in self.files:
            raise BundleError(f"health canary file {canary!r} is not a bundle file")
        if "model" in self.keys and self.keys["model"] not in self.files:
            raise BundleError(f"model file {self.keys['model']!r} is not a bundle file")
