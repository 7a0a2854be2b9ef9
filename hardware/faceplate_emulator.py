"""Faceplate actuator emulator: the firmware state machine served on a pty (or an existing tty),
with fault injection on the link. Run it as a separate process: `keycam hw emulate-faceplate`
(or `python -m hardware.faceplate_emulator`), which prints the device path on its first line.
"""
from __future__ import annotations

import heapq
import os
import random
import select
import signal
import subprocess
import sys
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from hardware.errors import FaceplateError
from hardware.faceplate_firmware import Firmware, FirmwareConfig
from hardware.protocol import MAX_LINE


@dataclass
class LinkFaults:
    """Faults injected on the emulated link; probabilities are per reply, drawn from `seed`."""

    drop: float = 0.0              # reply never sent
    garble: float = 0.0            # one reply byte replaced or the reply truncated
    noise: float = 0.0             # random garbage bytes (no newline) sent before the reply
    delay: float = 0.0             # seconds added before a reply ...
    delay_rate: float = 1.0        # ... with this probability
    disconnect_after: int | None = None   # answer this many requests, then close the link
    only: tuple[str, ...] = ()     # if set, reply faults hit only replies to these commands
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "garble", "noise", "delay_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"fault rate {name}={getattr(self, name)} must be within 0..1")
        if self.delay < 0:
            raise ValueError("delay must be >= 0 seconds")
        if self.disconnect_after is not None and self.disconnect_after < 0:
            raise ValueError("disconnect_after must be >= 0")


class Emulator:
    """Serves one Firmware on a file descriptor until stopped or disconnected."""

    def __init__(self, firmware: Firmware, faults: LinkFaults, log=None):
        self.fw = firmware
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.requests = 0
        self.log = log
        self._outbox: list[tuple[float, int, bytes]] = []   # (due time, order, bytes)
        self._order = 0

    def _say(self, text: str) -> None:
        if self.log:
            print(text, file=self.log, flush=True)

    def _queue(self, reply: bytes, now: float, command: str) -> None:
        f, rng = self.faults, self.rng
        if f.only and command not in f.only:
            heapq.heappush(self._outbox, (now, self._order, reply))
            self._order += 1
            return
        if rng.random() < f.drop:
            self._say(f"fault: drop {reply!r}")
            return
        if rng.random() < f.garble:
            reply = self._garble(reply)
            self._say(f"fault: garble -> {reply!r}")
        if rng.random() < f.noise:
            noise = bytes(rng.choice(b"#@*=0123456789ABCDEF xyz\x00\xff") for _ in range(rng.randint(1, 12)))
            reply = noise + reply
            self._say(f"fault: noise {noise!r}")
        due = now + (f.delay if f.delay and rng.random() < f.delay_rate else 0.0)
        heapq.heappush(self._outbox, (due, self._order, reply))
        self._order += 1

    def _garble(self, reply: bytes) -> bytes:
        body = bytearray(reply[:-1])
        if self.rng.random() < 0.5:
            i = self.rng.randrange(len(body))
            body[i] = self.rng.choice([c for c in range(32, 127) if c != body[i]])
        else:
            del body[self.rng.randint(1, len(body) - 1):]
        return bytes(body) + b"\n"

    def _flush(self, fd: int, now: float) -> bool:
        """Write every queued reply due by `now`; False when the link is gone."""
        while self._outbox and self._outbox[0][0] <= now:
            try:
                os.write(fd, heapq.heappop(self._outbox)[2])
            except OSError:
                return False
        return True

    def serve(self, fd: int, stop=lambda: False) -> str:
        """Run until `stop()` is true or a disconnect fault fires; returns why it ended."""
        buffer = b""
        while not stop():
            now = time.monotonic()
            if not self._flush(fd, now):
                return "link closed"
            wait = min(0.05, max(0.0, self._outbox[0][0] - now)) if self._outbox else 0.05
            readable, _, _ = select.select([fd], [], [], wait)
            if not readable:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return "link closed"
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                if len(line) > MAX_LINE:
                    self._say(f"discarded over-long line ({len(line)} bytes)")
                    continue
                self.requests += 1
                self._say(f"<- {line!r}")
                reply = self.fw.handle(line, time.monotonic())
                if reply is not None:
                    self._say(f"-> {reply!r}")
                    self._queue(reply, time.monotonic(), _command_of(line))
                if self.faults.disconnect_after is not None and self.requests >= self.faults.disconnect_after:
                    self._flush(fd, float("inf"))         # answer the last request, then vanish
                    return "disconnect fault"
            if len(buffer) > MAX_LINE:
                buffer = b""            # garbage without newline: resynchronise on the next one
        return "stopped"


def _command_of(line: bytes) -> str:
    """Best-effort command name of a request line (for command-filtered faults)."""
    parts = line[line.rfind(b"@"):].split(b" ")
    return parts[1].split(b"*")[0].decode("ascii", "replace") if len(parts) > 1 else ""


def open_pty() -> tuple[int, int, str]:
    """Open a raw pty pair; returns (master fd, slave fd, slave path the host opens)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


class EmulatorProcess:
    """Runs `keycam hw emulate-faceplate` as a child process; `.port` is its pty path.

    Used by tests and benchmarks: `with EmulatorProcess(['--drop', '0.3']) as emu: ... emu.port`.
    """

    def __init__(self, args: list[str] | None = None, start_timeout: float = 60.0):
        self.args = list(args or [])
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.port = ""
        self.log = ""          # the emulator's stderr (its -v trace), available after stop()

    def __enter__(self) -> EmulatorProcess:
        cmd = [sys.executable, "-m", "hardware.faceplate_emulator", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=Path(__file__).resolve().parents[1])
        ready, _, _ = select.select([self.proc.stdout], [], [], self.start_timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("/"):
            self.stop()
            raise FaceplateError(f"faceplate emulator did not start within {self.start_timeout}s: "
                                 f"{self.log.strip()[-500:]}")
        self.port = line
        return self

    def stop(self) -> None:
        """Terminate the emulator (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr and not self.proc.stderr.closed:
            self.log = self.proc.stderr.read()
        if self.proc:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()

    def __exit__(self, *exc) -> None:
        self.stop()


def run(config: FirmwareConfig, faults: LinkFaults, port: str | None = None, link: str | None = None,
        verbose: bool = False, announce=print) -> str:
    """Serve an emulated actuator on a new pty (or on `port`) until SIGTERM/SIGINT or a disconnect fault."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    slave = None
    if port:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        path = port
    else:
        fd, slave, path = open_pty()
    if link:
        Path(link).unlink(missing_ok=True)
        Path(link).symlink_to(path)
    announce(link or path)
    emulator = Emulator(Firmware(config), faults, log=sys.stderr if verbose else None)
    try:
        reason = emulator.serve(fd, stop=lambda: bool(stopping))
    finally:
        os.close(fd)
        if slave is not None:
            os.close(slave)
        if link:
            Path(link).unlink(missing_ok=True)
    return reason


if __name__ == "__main__":
    from hardware.cli import hw

    hw(["emulate-faceplate", *sys.argv[1:]], prog_name="keycam hw")
