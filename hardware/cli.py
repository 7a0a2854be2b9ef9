"""`keycam hw`: drive the faceplate actuator, run its emulator, probe a camera."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import click

from base.cli import KeycamGroup, emit_result, json_option
from base.errors import ConfigError
from hardware.protocol import EMPTY_SLOT


@click.group(cls=KeycamGroup)
def hw() -> None:
    """Hardware: faceplate actuator, its emulator, camera."""


@hw.command("emulate-faceplate")
@click.option("--faceplates", default=f"FP-0001,FP-0002,FP-0003,{EMPTY_SLOT}", show_default=True,
              help=f"Comma-separated faceplate id per turret slot; '{EMPTY_SLOT}' marks an empty slot.")
@click.option("--unit", default="ACT-EMU-01", show_default=True, help="Actuator unit id.")
@click.option("--firmware", default="1.2.0", show_default=True, help="Reported firmware version.")
@click.option("--start-slot", type=int, default=None, help="Physical slot at power-up [default: the last].")
@click.option("--step-time", type=float, default=0.02, show_default=True, help="Seconds per slot of motion.")
@click.option("--stall-timeout", type=float, default=0.3, show_default=True,
              help="Seconds without progress before the firmware latches STALL.")
@click.option("--port", default=None, help="Serve on this existing tty (e.g. one end of a socat pair) "
              "instead of a new pty.")
@click.option("--link", default=None, help="Also create a symlink with this name to the device path.")
@click.option("--drop", type=float, default=0.0, help="Fault: probability a reply is dropped.")
@click.option("--garble", type=float, default=0.0, help="Fault: probability a reply is corrupted.")
@click.option("--noise", type=float, default=0.0, help="Fault: probability of garbage bytes before a reply.")
@click.option("--delay", type=float, default=0.0, help="Fault: seconds added before replies.")
@click.option("--delay-rate", type=float, default=1.0, show_default=True,
              help="Fault: probability a reply is delayed by --delay.")
@click.option("--stuck", is_flag=True, help="Fault: the motor never moves (firmware reports STALL).")
@click.option("--disconnect-after", type=int, default=None,
              help="Fault: answer this many requests, then close the link.")
@click.option("--only", default="", help="Apply reply faults only to these commands (comma-separated, e.g. MOVE,HOME).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault draws.")
@click.option("-v", "--verbose", is_flag=True, help="Log every request, reply and fault on stderr.")
def emulate_faceplate(faceplates: str, unit: str, firmware: str, start_slot: int | None, step_time: float,
                      stall_timeout: float, port: str | None, link: str | None, drop: float, garble: float,
                      noise: float, delay: float, delay_rate: float, stuck: bool, disconnect_after: int | None,
                      only: str, seed: int, verbose: bool) -> None:
    """Emulate the actuator firmware on a pty; prints the device path, runs until Ctrl-C.

    \b
    Example:
      keycam hw emulate-faceplate --link /tmp/keycam-faceplate
    """
    from hardware.faceplate_emulator import LinkFaults, run
    from hardware.faceplate_firmware import FirmwareConfig

    try:
        config = FirmwareConfig(faceplates=[s.strip() for s in faceplates.split(",")], unit=unit,
                                firmware=firmware, step_time=step_time, stall_timeout=stall_timeout,
                                start_slot=start_slot, stuck=stuck)
        faults = LinkFaults(drop=drop, garble=garble, noise=noise, delay=delay, delay_rate=delay_rate,
                            disconnect_after=disconnect_after, seed=seed,
                            only=tuple(c.strip().upper() for c in only.split(",") if c.strip()))
    except ValueError as exc:
        raise ConfigError(f"emulate-faceplate: {exc}") from exc
    try:
        reason = run(config, faults, port=port, link=link, verbose=verbose,
                     announce=lambda path: print(path, flush=True))
    except OSError as exc:
        raise ConfigError(f"emulate-faceplate: cannot serve on {port or 'a new pty'}: {exc}") from exc
    click.echo(f"emulator ended: {reason}", err=True)


@hw.group()
@click.option("--port", required=True, help="Serial device path (or pyserial URL) of the actuator.")
@click.option("--baudrate", type=int, default=115200, show_default=True)
@click.option("--timeout", type=float, default=0.5, show_default=True, help="Seconds per reply.")
@click.option("--retries", type=int, default=3, show_default=True, help="Retries per request.")
@click.option("--move-timeout", type=float, default=10.0, show_default=True,
              help="Seconds a motion may take before it counts as failed.")
@click.pass_context
def faceplate(ctx: click.Context, port: str, baudrate: int, timeout: float, retries: int,
              move_timeout: float) -> None:
    """Drive a real or emulated faceplate actuator."""
    ctx.obj = dict(port=port, baudrate=baudrate, timeout=timeout, retries=retries, move_timeout=move_timeout)


def _run_action(ctx: click.Context, json_dest: str | None, action) -> None:
    """Run `action(faceplate)` and print the record(s) it returns, merged into one mapping."""
    from hardware.faceplate import SerialFaceplate

    with SerialFaceplate(**ctx.obj) as fp:
        records = action(fp)
    result = {}
    for record in records if isinstance(records, tuple) else (records,):
        result.update(asdict(record))
    emit_result(json_dest, result, "\n".join(f"{key:13s} {value}" for key, value in result.items()))


@faceplate.command()
@json_option()
@click.pass_context
def status(ctx: click.Context, json_dest: str | None) -> None:
    """Print position, engagement, motion and error state, with the actuator's identity.

    \b
    Example:
      keycam hw faceplate --port /dev/ttyUSB0 status --json
    """
    _run_action(ctx, json_dest, lambda fp: (fp.identify(), fp.status()))


@faceplate.command()
@json_option()
@click.pass_context
def home(ctx: click.Context, json_dest: str | None) -> None:
    """Drive to the home position (0) and wait until done.

    \b
    Example:
      keycam hw faceplate --port /dev/ttyUSB0 home
    """
    _run_action(ctx, json_dest, lambda fp: fp.home())


@faceplate.command()
@click.argument("position", type=click.IntRange(min=0))
@json_option()
@click.pass_context
def move(ctx: click.Context, position: int, json_dest: str | None) -> None:
    """Move the turret to slot POSITION and wait until there.

    \b
    Example:
      keycam hw faceplate --port /tmp/keycam-faceplate move 2 --json
    """
    _run_action(ctx, json_dest, lambda fp: fp.move(position))


@faceplate.command()
@json_option()
@click.pass_context
def engage(ctx: click.Context, json_dest: str | None) -> None:
    """Clamp the current faceplate into the optical path.

    \b
    Example:
      keycam hw faceplate --port /tmp/keycam-faceplate engage --json
    """
    _run_action(ctx, json_dest, lambda fp: fp.engage())


@faceplate.command()
@json_option()
@click.pass_context
def disengage(ctx: click.Context, json_dest: str | None) -> None:
    """Release the faceplate clamp.

    \b
    Example:
      keycam hw faceplate --port /tmp/keycam-faceplate disengage
    """
    _run_action(ctx, json_dest, lambda fp: fp.disengage())


@hw.command()
@click.option("--source", default="samples", show_default=True,
              help="Replay source: 'samples', an image folder, an .npz or an IDX file; 'picamera2' for the Pi camera.")
@click.option("--frames", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--fps", type=float, default=None, help="Replay frame rate (default: as fast as possible).")
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds to wait per frame.")
@json_option()
def camera(source: str, frames: int, fps: float | None, timeout: float, json_dest: str | None) -> None:
    """Read some frames from a camera and report shape, rate, drops and intensity range.

    \b
    Example:
      keycam hw camera --source samples --frames 20 --json
    """
    from hardware.camera import CAMERAS

    config = {"type": "picamera2"} if source == "picamera2" else {"type": "replay", "source": source, "fps": fps}
    start = time.monotonic()
    lo, hi = float("inf"), float("-inf")
    with CAMERAS.create(config, "camera", base=Path.cwd()) as cam:
        for _ in range(frames):
            frame = cam.read(timeout)
            lo, hi = min(lo, float(frame.image.min())), max(hi, float(frame.image.max()))
        elapsed = time.monotonic() - start
        report = {"source": source, "frames": frames, "shape": list(cam.frame_shape), "dropped": cam.dropped,
                  "fps": round(frames / elapsed, 2) if elapsed > 0 else None, "min": lo, "max": hi,
                  "last_seq": frame.seq, "exposure_us": frame.exposure_us, "analog_gain": frame.analog_gain}
    emit_result(json_dest, report, "\n".join(f"{key:12s} {value}" for key, value in report.items()))


