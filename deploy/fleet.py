"""Roll a bundle out to devices: verify locally, upload, let the agent install; canary devices first."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from deploy.bundle import read_manifest, verify_bundle
from deploy.inventory import Entry
from deploy.manifest import BundleError, parse_version
from edge.errors import KeycamError

Confirm = Callable[[str, str], None]
Resolve = Callable[[Entry], Path]


def find_bundle(entry: Entry, bundles_dir: Path | None, trusted: bytes) -> Path:
    """The entry's own bundle, or the newest correctly signed bundle for it in `bundles_dir`."""
    if entry.bundle is not None:
        return entry.bundle
    if bundles_dir is None:
        raise BundleError(f"{entry.device_id}: no bundle given (set 'bundle' in the inventory or --bundles DIR)")
    best = None
    for path in sorted(Path(bundles_dir).glob("*.bundle")):
        try:
            manifest = read_manifest(path, trusted)
        except KeycamError:
            continue
        if manifest.device_id == entry.device_id and (
                best is None or parse_version(manifest.version) > parse_version(best[1].version)):
            best = (path, manifest)
    if best is None:
        raise BundleError(f"{entry.device_id}: no bundle signed by the trusted key in {bundles_dir}")
    return best[0]


def push_one(entry: Entry, resolve: Resolve, trusted: bytes, dry_run: bool, use_service: bool,
             confirm: Confirm | None) -> dict:
    """Deploy one device; never raises for device-side problems (they become the result's reason)."""
    start = time.monotonic()
    transport = entry.transport()
    result = {"device": entry.device_id, "target": transport.describe()}
    try:
        bundle = resolve(entry)
        result["bundle"] = str(bundle)
        manifest = verify_bundle(bundle, trusted)
        result["version"] = manifest.version
        if manifest.device_id != entry.device_id:
            raise BundleError(f"bundle {bundle.name} is for {manifest.device_id!r}, not {entry.device_id!r}")
        if dry_run:
            status = transport.agent("status")
            if not status["ok"]:
                raise KeycamError(f"device status failed: {status.get('error')}")
            if status["device_id"] != entry.device_id:
                raise KeycamError(f"target answers as device {status['device_id']!r}, not {entry.device_id!r}")
            result.update(status="planned", ok=True, from_version=status["version"])
            return result
        # one round trip: the agent checks size and sha256, then verifies and installs (or refuses)
        answer = transport.upload(bundle, "--install", *([] if use_service else ["--no-service"]))
        result["from_version"] = answer.get("from_version")
        result["ok"] = bool(answer["ok"])
        if answer["ok"]:
            result.update(status="installed", slot=answer["committed"], health=answer["health"])
            if confirm is not None:
                confirm(entry.device_id, manifest.keys.get("key_fingerprint", ""))
        elif "error" in answer:
            result.update(status="refused", reason=answer["error"])
        else:
            result.update(status="rolled back", reason=answer.get("reason"), health=answer.get("health"))
    except KeycamError as exc:
        result.update(ok=False, status="failed", reason=str(exc))
    finally:
        result["seconds"] = round(time.monotonic() - start, 2)
    return result


def push(entries: list[Entry], resolve: Resolve, trusted: bytes, canary: int = 0,
         dry_run: bool = False, use_service: bool = True, confirm: Confirm | None = None,
         progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Push to the first `canary` devices, and to the rest only if every canary succeeded."""
    results: list[dict] = []
    canary_failed = False
    for i, entry in enumerate(entries):
        if canary_failed:
            res = {"device": entry.device_id, "ok": False, "status": "skipped",
                   "reason": "a canary device failed; the rest of the roll-out was not attempted"}
        else:
            res = push_one(entry, resolve, trusted, dry_run, use_service, confirm)
            res["canary"] = i < canary
            canary_failed = res["canary"] and not res["ok"]
        results.append(res)
        if progress is not None:
            progress(res)
    return results
