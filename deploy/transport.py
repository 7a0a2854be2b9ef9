"""How the host reaches a device's agent: a local directory (an SD card's root filesystem mounted on
the host, first flash) or SSH. Both run the same agent CLI and parse its one-line JSON answer.

Target strings:  dir:PATH   |   ssh://[USER@]HOST[:PORT]/ABSOLUTE/ROOT
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from base.errors import KeycamError

_SSH = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+)(?::(?P<port>\d+))?(?P<root>/.*)$")


class TransportError(KeycamError):
    """The device could not be reached or its agent did not answer."""


@dataclass
class Transport:
    """Base: run `python -m deploy.agent --root ROOT ...` somewhere and return its JSON answer."""
    root: str
    python: str = sys.executable
    timeout_s: float = 300.0
    env: dict[str, str] = field(default_factory=dict)   # extra environment for the agent

    def describe(self) -> str:
        raise NotImplementedError

    def _argv(self, agent_args: list[str]) -> list[str]:
        raise NotImplementedError

    def agent(self, *args: str, stdin: bytes | None = None) -> dict:
        """Run one agent command; return its JSON result (which carries "ok")."""
        argv = self._argv(list(args))
        try:
            proc = subprocess.run(argv, input=stdin if stdin is not None else b"", capture_output=True,
                                  timeout=self.timeout_s, env=self._local_env())
        except subprocess.TimeoutExpired as exc:
            raise TransportError(f"{self.describe()}: agent '{args[0]}' timed out after {self.timeout_s:g} s") from exc
        except OSError as exc:
            raise TransportError(f"{self.describe()}: cannot run {argv[0]}: {exc}") from exc
        lines = proc.stdout.decode(errors="replace").strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (ValueError, IndexError):
            err = proc.stderr.decode(errors="replace").strip()[-400:]
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            raise TransportError(f"{self.describe()}: agent '{args[0]}' gave no answer ({how}): {err}") from None

    def _local_env(self) -> dict[str, str] | None:
        return None

    def upload(self, bundle: Path, *then: str) -> dict:
        """Send a bundle to the device's incoming/ (size and sha256 checked there); `then` adds
        agent options such as --install, so upload and install take one round trip."""
        data = Path(bundle).read_bytes()
        return self.agent("receive", "--sha256", hashlib.sha256(data).hexdigest(), "--size", str(len(data)),
                          *then, stdin=data)


@dataclass
class DirTransport(Transport):
    """The device root is a local directory (e.g. a mounted SD card); the agent runs on the host."""

    def describe(self) -> str:
        return f"dir:{self.root}"

    def _argv(self, agent_args: list[str]) -> list[str]:
        return [self.python, "-m", "deploy.agent", "--root", self.root, *agent_args]

    def _local_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}


@dataclass
class SshTransport(Transport):
    """The agent runs on the device over ssh (BatchMode, key authentication, checked host key)."""
    host: str = ""
    user: str | None = None
    port: int = 22
    identity_file: str | None = None
    known_hosts: str | None = None
    connect_timeout_s: int = 10

    def describe(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}:{self.port}{self.root}"

    def _argv(self, agent_args: list[str]) -> list[str]:
        argv = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={self.connect_timeout_s}", "-o", "StrictHostKeyChecking=yes"]
        if self.identity_file:
            argv += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        argv += ["--", f"{self.user}@{self.host}" if self.user else self.host]
        remote = [f"{k}={v}" for k, v in sorted(self.env.items())]
        remote += [self.python, "-m", "deploy.agent", "--root", self.root, *agent_args]
        return argv + [("env " if self.env else "") + shlex.join(remote)]


def parse_target(target: str, **options) -> Transport:
    """Build a transport from a target string plus inventory options (python, ssh settings)."""
    if target.startswith("dir:"):
        path = target[4:]
        if not path:
            raise TransportError("target 'dir:' needs a path, e.g. dir:/media/sdcard/var/lib/keycam")
        return DirTransport(root=str(Path(path).expanduser().resolve()),
                            **{k: v for k, v in options.items() if k in ("python", "timeout_s", "env")})
    m = _SSH.match(target)
    if not m:
        raise TransportError(f"unknown target {target!r}: use dir:PATH or ssh://[user@]host[:port]/root/path")
    ssh_keys = ("python", "timeout_s", "env", "identity_file", "known_hosts", "connect_timeout_s")
    kwargs = {k: v for k, v in options.items() if k in ssh_keys and v is not None}
    for k in ("identity_file", "known_hosts"):
        if k in kwargs:
            kwargs[k] = str(Path(kwargs[k]).expanduser())
    kwargs.setdefault("python", "python3")
    return SshTransport(root=m["root"], host=m["host"], user=m["user"] or options.get("user"),
                        port=int(m["port"] or options.get("port") or 22), **kwargs)
