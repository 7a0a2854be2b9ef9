"""Fleet inventory (YAML), validated on load.

    defaults:                      # optional; any per-device option
      python: /opt/keycam/.venv/bin/python
      identity_file: ~/.ssh/keycam_ed25519
      known_hosts: ~/.ssh/known_hosts
    devices:
      - id: cam-01
        target: ssh://pi@10.0.0.5:22/var/lib/keycam
        bundle: bundles/cam-01-1.1.0.bundle    # optional; else the newest for it in --bundles DIR
      - id: cam-02
        target: dir:/media/sdcard/var/lib/keycam
Relative paths are relative to the inventory file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from base.errors import ConfigError
from deploy.manifest import BundleError, check_device_id
from deploy.transport import Transport, TransportError, parse_target

OPTIONS = {"python": str, "identity_file": str, "known_hosts": str, "user": str, "port": int,
           "timeout_s": (int, float), "connect_timeout_s": int}
_PATH_OPTIONS = ("identity_file", "known_hosts")


@dataclass
class Entry:
    """One device of the inventory."""
    device_id: str
    target: str
    bundle: Path | None = None
    options: dict = field(default_factory=dict)

    def transport(self, env: dict | None = None) -> Transport:
        return parse_target(self.target, **self.options, env=dict(env or {}))


def _options(doc: dict, where: str, base: Path) -> dict:
    out = {}
    for key, value in doc.items():
        if key not in OPTIONS:
            raise ConfigError(f"{where}: unknown option {key!r} (allowed: {', '.join(sorted(OPTIONS))})")
        if isinstance(value, bool) or not isinstance(value, OPTIONS[key]):
            raise ConfigError(f"{where}: option {key!r} has the wrong type")
        if key in _PATH_OPTIONS:
            value = str((base / Path(value).expanduser()).resolve())
        out[key] = value
    return out


def load_inventory(path: str | Path) -> list[Entry]:
    """Parse and validate an inventory file; every problem is a ConfigError naming the entry."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read inventory {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"inventory {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) - {"defaults", "devices"}:
        raise ConfigError(f"inventory {path}: top-level keys must be 'defaults' and 'devices'")
    base = path.parent
    defaults = _options(doc.get("defaults") or {}, f"{path}: defaults", base)
    devices = doc.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ConfigError(f"inventory {path}: 'devices' must be a non-empty list")
    entries, seen = [], set()
    for n, dev in enumerate(devices, 1):
        where = f"{path}: device #{n}"
        if not isinstance(dev, dict) or "id" not in dev or "target" not in dev:
            raise ConfigError(f"{where} needs 'id' and 'target'")
        try:
            device_id = check_device_id(dev["id"])
        except BundleError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if device_id in seen:
            raise ConfigError(f"{where}: device {device_id!r} is listed twice")
        seen.add(device_id)
        rest = {k: v for k, v in dev.items() if k not in ("id", "target", "bundle")}
        target = dev["target"]
        if isinstance(target, str) and target.startswith("dir:") and not Path(target[4:]).is_absolute():
            target = f"dir:{(base / target[4:]).resolve()}"
        bundle = (base / dev["bundle"]).resolve() if dev.get("bundle") else None
        entry = Entry(device_id, target, bundle, {**defaults, **_options(rest, where, base)})
        try:
            entry.transport()
        except TransportError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        entries.append(entry)
    return entries


def select(entries: list[Entry], limit: tuple[str, ...]) -> list[Entry]:
    """Keep the entries named in --limit (comma lists allowed), in inventory order."""
    wanted = {name.strip() for item in limit for name in item.split(",") if name.strip()}
    if not wanted:
        return entries
    unknown = wanted - {e.device_id for e in entries}
    if unknown:
        raise ConfigError(f"--limit names devices not in the inventory: {', '.join(sorted(unknown))}")
    return [e for e in entries if e.device_id in wanted]
