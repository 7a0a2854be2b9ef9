"""Roll a bundle out to devices: verify locally, upload, let the agent install; canary devices first."""
from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from base.errors import KeycamError
from deploy.bundle import read_manifest, verify_bundle
from deploy.inventory import Entry
from deploy.manifest import BundleError, parse_version

Confirm = Callable[[str, str], None]
Resolve = Callable[[Entry], Path]


class PushInterrupted(KeyboardInterrupt):
    """The operator interrupted a roll-out (Ctrl-C); `results` says what each device ended up running."""

    def __init__(self, results: list[dict]):
        self.results = results
        last = results[-1] if results else {}
        super().__init__(f"push interrupted: {last.get('reason', 'no device was touched')}")


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Let a clean-up step finish (children inherit the ignore, so a second Ctrl-C does not cut it short)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def settle_interrupted(entry: Entry, transport, version: str, fingerprint: str, confirm: Confirm | None) -> dict:
    """After Ctrl-C during an install: ask the device what it committed and bring the vault in line."""
    with _sigint_ignored():
        try:
            status = transport.agent("status")
        except KeycamError as exc:
            status = {"ok": False, "error": str(exc)}
        if not status.get("ok"):
            return {"status": "interrupted", "reason": f"push interrupted and the device could not be asked what it "
                    f"runs ({status.get('error')}); run `keycam deploy status` before pushing again"}
        if status.get("version") == version and status.get("key_fingerprint") == fingerprint:
            if confirm is not None:
                confirm(entry.device_id, fingerprint)
            return {"status": "interrupted", "slot": status.get("committed"),
                    "reason": f"push interrupted after the device committed {version}"
                    + (" (key set confirmed in the vault)" if confirm is not None else "")}
        return {"status": "interrupted", "reason": f"push interrupted before the device switched: it still runs "
                f"{status.get('version') or 'nothing'}; push again to install {version}"}


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
        fingerprint = manifest.keys.get("key_fingerprint", "")
        try:
            answer = transport.upload(bundle, "--install", *([] if use_service else ["--no-service"]))
        except KeyboardInterrupt:
            result.update(ok=False, **settle_interrupted(entry, transport, manifest.version, fingerprint, confirm))
            result["seconds"] = round(time.monotonic() - start, 2)
            raise PushInterrupted([result]) from None
        result["from_version"] = answer.get("from_version")
        result["ok"] = bool(answer["ok"])
        if answer["ok"]:
            result.update(status="already installed" if answer.get("already_installed") else "installed",
                          slot=answer["committed"], health=answer["health"])
            if confirm is not None:
                confirm(entry.device_id, fingerprint)
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
            try:
                res = push_one(entry, resolve, trusted, dry_run, use_service, confirm)
            except PushInterrupted as exc:
                if progress is not None:
                    progress(exc.results[-1])
                raise PushInterrupted(results + exc.results) from None
            res["canary"] = i < canary
            canary_failed = res["canary"] and not res["ok"]
        results.append(res)
        if progress is not None:
            progress(res)
    return results
