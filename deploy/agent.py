"""The device agent: receive a bundle, verify it, install it into the inactive A/B slot, switch,
restart the service, health-check, then commit or roll back. Device side: no tools/ imports.
Key material (model, sensor key, canary) stays sealed in the slot: the agent only checks, in memory,
that each sealed file opens with this device's key before it switches.

Every command prints one JSON object on stdout (`"ok": true|false`) and exits 0 or 1:
    python -m deploy.agent --root ROOT init --device-id ID --hardware HW --signing-pub B64
    python -m deploy.agent --root ROOT receive --sha256 HEX --size N [--install]  < bundle
    python -m deploy.agent --root ROOT install BUNDLE [--no-service]
    python -m deploy.agent --root ROOT status | rollback [--no-service] | recover
Crash safety: state.json records an install in flight ("trying") before `current` is switched; every
command first runs recovery, which points `current` back at the committed slot and restarts the
service. Run `recover --no-service` at boot too, e.g. as the service's ExecStartPre.
Installing the bundle that is already committed answers ok with "already_installed" (so a push that
was interrupted after the device committed can simply be repeated).
For fault tests the environment variable KEYCAM_AGENT_CRASH_AT=<step> kills the agent with SIGKILL
at that step (see STEPS), and KEYCAM_AGENT_INTERRUPT_AT=<step> sends SIGINT to the agent's whole
process group there, as a Ctrl-C in the operator's terminal does.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from base.atomic import fsync_dir
from base.clock import now_iso
from base.errors import KeycamError
from base.signing import public_key_id
from deploy.bundle import CHUNK, extract, verify_bundle
from deploy.device import SLOTS, DeviceRoot, ServiceConfig, tree_digest
from deploy.manifest import MANIFEST, BundleError, Manifest, parse_version
from keys.sealing import SealedFileError, context_for, unseal

CRASH_ENV = "KEYCAM_AGENT_CRASH_AT"
INTERRUPT_ENV = "KEYCAM_AGENT_INTERRUPT_AT"
STEPS = ("verified", "extracting", "extracted", "marked", "switched", "restarted", "checked", "committed")


class AgentError(KeycamError):
    """The agent refused or could not complete an operation; the committed slot is untouched."""


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(INTERRUPT_ENV) == step:
        os.killpg(os.getpgrp(), signal.SIGINT)


def _manifest_of(slot_dir: Path) -> Manifest | None:
    try:
        return Manifest.from_bytes((slot_dir / MANIFEST).read_bytes())
    except (OSError, BundleError):
        return None


def _manifest_digest(manifest: Manifest) -> str:
    """What state.json records of the committed bundle (so the same bundle is recognised again)."""
    return hashlib.sha256(manifest.to_bytes()).hexdigest()


def _version_of(slot_dir: Path) -> str | None:
    manifest = _manifest_of(slot_dir)
    return manifest.version if manifest else None


class Agent:
    """A/B slot operations on one device root."""

    def __init__(self, root: str | Path):
        self.dev = DeviceRoot(root)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.dev.root.is_dir():
            raise AgentError(f"device root {self.dev.root} does not exist")
        fd = os.open(self.dev.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise AgentError("another agent operation is running on this device") from exc
            yield
        finally:
            os.close(fd)

    # ---- service and health ---------------------------------------------------------------------
    def _run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        """Run a command in the device root: (exit code, stdout, stderr); 124 = timeout, 127 = cannot run."""
        env = dict(os.environ, KEYCAM_ROOT=str(self.dev.root), KEYCAM_CURRENT=str(self.dev.current))
        env.pop(CRASH_ENV, None)
        env.pop(INTERRUPT_ENV, None)
        try:
            proc = subprocess.run(argv, cwd=self.dev.root, env=env, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 124, "", f"{argv[0]} timed out after {timeout:g} s"
        except OSError as exc:
            return 127, "", f"cannot run {argv[0]}: {exc}"
        return proc.returncode, proc.stdout, proc.stderr.strip()[-500:]

    def _restart(self, cfg: ServiceConfig) -> str | None:
        """Restart the service; return a problem description or None."""
        if cfg.restart is None:
            return None
        rc, _, err = self._run(cfg.restart, cfg.start_timeout_s)
        return None if rc == 0 else f"service restart failed (exit {rc}): {err}"

    def _service_up(self, cfg: ServiceConfig) -> str | None:
        """Poll is_active until it succeeds or start_timeout_s passes."""
        if cfg.is_active is None:
            return None
        deadline = time.monotonic() + cfg.start_timeout_s
        while True:
            rc, _, err = self._run(cfg.is_active, max(0.5, deadline - time.monotonic()))
            if rc == 0:
                return None
            if time.monotonic() >= deadline:
                return f"service is not up after {cfg.start_timeout_s:g} s (is_active exit {rc}: {err})"
            time.sleep(0.2)

    def _health(self, slot: str, manifest: Manifest, cfg: ServiceConfig) -> dict:
        """Service up AND the keyed model classifies the canary frames, within the timeout."""
        problem = self._service_up(cfg)
        if problem:
            return {"ok": False, "reason": problem, "service": "down"}
        timeout = float(manifest.health.get("timeout_s") or cfg.health_timeout_s)
        rc, out, err = self._run([sys.executable, "-m", "deploy.health", str(self.dev.slot_dir(slot))], timeout)
        if rc == 124:
            return {"ok": False, "reason": f"model health check timed out after {timeout:g} s"}
        try:
            verdict = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            return {"ok": False, "reason": f"model health check crashed (exit {rc}): {err}"}
        verdict["service"] = "up" if cfg.is_active else "not configured"
        return verdict

    # ---- recovery -------------------------------------------------------------------------------
    def _recover(self, state: dict, cfg: ServiceConfig) -> dict | None:
        """Undo an install/rollback that died before committing: back to the committed slot."""
        committed = state["committed"]
        if state.get("trying") is None and self.dev.current_slot() == committed:
            return None
        interrupted = state.get("trying")
        self.dev.switch(committed)
        problem = self._restart(cfg) if committed else None
        state["trying"] = None
        event = {"at": now_iso(), "event": "recovered", "slot": committed,
                 "interrupted": interrupted, "restart_problem": problem}
        state["history"].append(event)
        self.dev.save_state(state)
        return event

    def recover(self, use_service: bool = True) -> dict:
        """Point `current` back at the committed slot after an interrupted install (and restart the
        service, unless use_service is False: at boot, from the service's own ExecStartPre)."""
        with self._locked():
            state = self.dev.load_state()
            event = self._recover(state, self.dev.service_config() if use_service else ServiceConfig())
        return {"ok": True, "recovered": event is not None, "event": event, "committed": state["committed"]}

    # ---- activation (shared by install and rollback) --------------------------------------------
    def _activate(self, state: dict, slot: str, manifest: Manifest, cfg: ServiceConfig, action: str) -> dict:
        old, old_version = state["committed"], state["version"]
        state["trying"] = {"slot": slot, "version": manifest.version, "action": action, "since": now_iso()}
        self.dev.save_state(state)
        _crash_point("marked")
        try:
            self.dev.switch(slot)
            _crash_point("switched")
            problem = self._restart(cfg)
            _crash_point("restarted")
            verdict = {"ok": False, "reason": problem} if problem else self._health(slot, manifest, cfg)
            _crash_point("checked")
        except BaseException:
            self._recover(state, cfg)
            raise
        result = {"action": action, "device_id": manifest.device_id, "version": manifest.version,
                  "from_version": old_version, "slot": slot, "health": verdict}
        if verdict["ok"]:
            floor = max(state["min_version"], manifest.minimum_version, key=parse_version)
            # a rollback leaves nothing to roll back to: a second one would move forward again
            state.update(committed=slot, version=manifest.version, trying=None,
                         previous=old if action == "install" else None,
                         min_version=floor, manifest_sha256=_manifest_digest(manifest))
            state["history"].append({"at": now_iso(), "event": f"{action} committed", "slot": slot,
                                     "version": manifest.version})
            self.dev.save_state(state)
            _crash_point("committed")
            return {"ok": True, "committed": slot, **result}
        self.dev.switch(old)
        restart_problem = self._restart(cfg) if old else None
        state["trying"] = None
        state["history"].append({"at": now_iso(), "event": f"{action} rolled back", "slot": slot,
                                 "version": manifest.version, "reason": verdict.get("reason")})
        self.dev.save_state(state)
        return {"ok": False, "rolled_back_to": old, "reason": verdict.get("reason"),
                "restart_problem": restart_problem, **result}

    # ---- install --------------------------------------------------------------------------------
    def _check_applicable(self, manifest: Manifest, state: dict) -> None:
        ident = self.dev.identity()
        if manifest.device_id != ident["device_id"]:
            raise AgentError(f"bundle is for device {manifest.device_id!r}, this is {ident['device_id']!r}")
        if ident["hardware"] not in manifest.compatible:
            raise AgentError(f"bundle is for hardware {', '.join(manifest.compatible)}; "
                             f"this device is {ident['hardware']!r}")
        if parse_version(manifest.version) < parse_version(state["min_version"]):
            raise AgentError(f"bundle version {manifest.version} is older than this device's minimum "
                             f"version {state['min_version']} (downgrade protection)")
        if state["version"] and parse_version(manifest.version) <= parse_version(state["version"]):
            raise AgentError(f"bundle version {manifest.version} is not newer than the installed "
                             f"{state['version']} (downgrade refused)")

    def _check_sealed_to_me(self, manifest: Manifest) -> None:
        """Refuse, before touching a slot, a bundle whose secrets are sealed to another device key."""
        mine = public_key_id(self.dev.device_key().public_key())
        for name, spec in sorted(manifest.secrets.items()):
            theirs = spec.get("device_key_id") if isinstance(spec, dict) else None
            if theirs and theirs != mine:
                raise AgentError(
                    f"bundle file {name} is sealed to device key {theirs}, but this device's key is {mine}. "
                    "Cause: the bundle was built for another key pair (the device got a new one from `keycam "
                    "keys export --new-device-key` after the build, or the vault's key is that of another SD "
                    "card), or it is for another device. Fix: rebuild it with `keycam deploy build` (it seals to "
                    "the key the vault records); if the vault records another key than this device holds, first "
                    "re-export to this root with `keycam keys export DEVICE --out ROOT --new-device-key`")

    def _sealed_check(self, manifest: Manifest):
        """Per-file hook for `extract`: each sealed file must open with the device key (in memory only;
        the slot keeps it sealed), and it hosts a crash point."""
        key, first = None, True

        def transform(name: str, data: bytes) -> bytes:
            nonlocal key, first
            if first:
                first = False
                _crash_point("extracting")
            if name in manifest.secrets:
                key = key or self.dev.device_key()
                spec = manifest.secrets[name]
                role = spec.get("role", name) if isinstance(spec, dict) else name
                try:
                    unseal(key, data, context_for(manifest.device_id, role), f"bundle file {name}")
                except SealedFileError as exc:
                    raise AgentError(str(exc)) from exc
            return data
        return transform

    def install(self, bundle: str | Path, use_service: bool = True) -> dict:
        """Verify, unpack into the inactive slot, switch, restart, health-check, commit or roll back.

        An uploaded bundle (in incoming/) is deleted afterwards, whatever the outcome."""
        bundle = Path(bundle)
        try:
            with self._locked():
                return self._install(bundle, use_service)
        finally:
            if bundle.parent.resolve() == self.dev.incoming.resolve():
                bundle.unlink(missing_ok=True)

    def _install(self, bundle: Path, use_service: bool) -> dict:
        state = self.dev.load_state()
        cfg = self.dev.service_config() if use_service else ServiceConfig()
        self._recover(state, cfg)
        manifest = verify_bundle(bundle, self.dev.trusted_signing_key())
        _crash_point("verified")
        if state.get("manifest_sha256") == _manifest_digest(manifest):
            return {"ok": True, "already_installed": True, "action": "install", "device_id": manifest.device_id,
                    "version": manifest.version, "from_version": state["version"], "slot": state["committed"],
                    "committed": state["committed"], "health": {"ok": True, "reason": "already committed"}}
        self._check_applicable(manifest, state)
        self._check_sealed_to_me(manifest)
        slot = next(s for s in SLOTS if s != state["committed"])
        self.dev.slot_dir(slot).parent.mkdir(parents=True, exist_ok=True)
        if state.get("previous") == slot:   # its old install is about to be overwritten
            state["previous"] = None
            self.dev.save_state(state)
        target = self.dev.slot_dir(slot)
        shutil.rmtree(target, ignore_errors=True)
        try:
            extract(bundle, manifest, target, self._sealed_check(manifest))
        except BaseException as exc:
            shutil.rmtree(target, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise AgentError(f"device disk is full while unpacking into slot {slot}; "
                                 "free space and retry (the running slot is untouched)") from exc
            raise
        fsync_dir(target)
        _crash_point("extracted")
        return self._activate(state, slot, manifest, cfg, "install")

    def rollback(self, use_service: bool = True) -> dict:
        """Switch back to the previously committed slot (health-checked like an install)."""
        with self._locked():
            state = self.dev.load_state()
            cfg = self.dev.service_config() if use_service else ServiceConfig()
            self._recover(state, cfg)
            prev = state.get("previous")
            if not prev or prev == state["committed"]:
                rolled = state["history"] and state["history"][-1]["event"] == "rollback committed"
                raise AgentError("there is no previous slot to roll back to" + (
                    " (this device was just rolled back; push a bundle to move forward)" if rolled else ""))
            try:
                manifest = Manifest.from_bytes((self.dev.slot_dir(prev) / MANIFEST).read_bytes())
            except (OSError, BundleError) as exc:
                raise AgentError(f"previous slot {prev} holds no usable install: {exc}") from exc
            if parse_version(manifest.version) < parse_version(state["min_version"]):
                raise AgentError(f"previous slot has version {manifest.version}, below the minimum "
                                 f"version {state['min_version']}; rollback refused")
            return self._activate(state, prev, manifest, cfg, "rollback")

    # ---- upload ---------------------------------------------------------------------------------
    def receive(self, stream: BinaryIO, sha256: str, size: int) -> dict:
        """Store an upload in incoming/ after checking its size and sha256 (a partial one is removed)."""
        self.dev.identity()
        self.dev.incoming.mkdir(parents=True, exist_ok=True)
        final = self.dev.incoming / f"{sha256}.bundle"
        part = final.with_suffix(".part")
        h, got = hashlib.sha256(), 0
        try:
            with open(part, "wb") as fh:
                while got <= size and (chunk := stream.read(CHUNK)):
                    h.update(chunk)
                    got += len(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise AgentError("device disk is full while receiving the bundle") from exc
            raise
        if got != size or h.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            raise AgentError(f"upload truncated or corrupted: received {got} of {size} bytes "
                             f"(sha256 {'matches' if h.hexdigest() == sha256 else 'differs'})")
        os.replace(part, final)
        return {"ok": True, "path": str(final), "size": got}

    # ---- status ---------------------------------------------------------------------------------
    def check_committed(self, slot: str, version: str) -> dict:
        """Health-check `slot` again if it is still the committed, running slot at `version` (Mender's
        ArtifactCommit): {"ok": False, "reason": ...} when it is not, or when it is unhealthy."""
        with self._locked():
            state = self.dev.load_state()
            if (state["committed"], state["version"], self.dev.current_slot()) != (slot, version, slot):
                return {"ok": False, "reason": f"slot {slot} ({version}) is no longer the running, committed slot"}
            manifest = _manifest_of(self.dev.slot_dir(slot))
            if manifest is None:
                return {"ok": False, "reason": f"slot {slot} has no manifest"}
            return self._health(slot, manifest, self.dev.service_config())

    def status(self) -> dict:
        with self._locked():
            state = self.dev.load_state()
            cfg = self.dev.service_config()
            recovered = self._recover(state, cfg)
        ident = self.dev.identity()
        slots = {s: {"version": _version_of(self.dev.slot_dir(s)), "digest": tree_digest(self.dev.slot_dir(s))}
                 for s in SLOTS}
        committed = _manifest_of(self.dev.slot_dir(state["committed"])) if state["committed"] else None
        service = None if cfg.is_active is None else (self._run(cfg.is_active, cfg.start_timeout_s)[0] == 0)
        return {"ok": True, **ident, "committed": state["committed"], "current": self.dev.current_slot(),
                "version": state["version"], "min_version": state["min_version"],
                "previous": state.get("previous"), "slots": slots, "service_up": service,
                "key_fingerprint": committed.keys.get("key_fingerprint") if committed else None,
                "recovered": recovered, "history": state["history"][-5:]}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deploy.agent", description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="device root directory")
    sub = p.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser("init", help="create the device identity (generates the device key)")
    init.add_argument("--device-id", required=True)
    init.add_argument("--hardware", required=True)
    init.add_argument("--signing-pub", required=True, help="trusted bundle-signing public key (base64)")
    rec = sub.add_parser("receive", help="store a bundle read from stdin in incoming/")
    rec.add_argument("--sha256", required=True)
    rec.add_argument("--size", required=True, type=int)
    rec.add_argument("--install", action="store_true", help="install it right away (one round trip)")
    rec.add_argument("--no-service", action="store_true", help="with --install: no restart/is-active")
    ins = sub.add_parser("install", help="install a bundle into the inactive slot")
    ins.add_argument("bundle")
    ins.add_argument("--no-service", action="store_true", help="no restart/is-active (first flash)")
    rb = sub.add_parser("rollback", help="switch back to the previous slot")
    rb.add_argument("--no-service", action="store_true")
    sub.add_parser("status", help="identity, slots, versions, service")
    rc = sub.add_parser("recover", help="undo an interrupted install (run at boot)")
    rc.add_argument("--no-service", action="store_true", help="do not restart the service (ExecStartPre)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    agent = Agent(args.root)
    try:
        if args.cmd == "init":
            pub = agent.dev.init_identity(args.device_id, args.hardware, args.signing_pub)
            result = {"ok": True, "device_id": args.device_id, "device_public": pub}
        elif args.cmd == "receive":
            result = agent.receive(sys.stdin.buffer, args.sha256, args.size)
            if args.install:
                result = agent.install(result["path"], use_service=not args.no_service)
        elif args.cmd == "install":
            result = agent.install(args.bundle, use_service=not args.no_service)
        elif args.cmd == "rollback":
            result = agent.rollback(use_service=not args.no_service)
        elif args.cmd == "recover":
            result = agent.recover(use_service=not args.no_service)
        else:
            result = agent.status()
    except (KeycamError, OSError) as exc:
        result = {"ok": False, "error": str(exc)}
    except KeyboardInterrupt:
        print(json.dumps({"ok": False, "interrupted": True, "error": f"agent '{args.cmd}' interrupted (SIGINT); "
                          "the committed slot is whatever `status` reports"}, sort_keys=True))
        return 130
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
