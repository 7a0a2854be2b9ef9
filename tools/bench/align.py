"""`keycam bench align`: what face alignment (`key_stage: {align_faces: true}`) costs the device per frame.

Alignment runs inside the simulated pre-ADC key stage, on the plain frame, before the key (a keyed frame has
no landmarks). Each LFW-like face crop goes, interleaved in one process, through: the dlib 5-point landmarks
(on the frame's 8-bit codes), the similarity fit, the bilinear warp of the linear frame, and the whole key
stage (edge.keystage.SimulatedKeyStage: key, noise, ADC) without and with alignment. Medians over the frames.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import click
import numpy as np

from base.cli import json_option
from base.errors import ConfigError
from edge.keystage import SimulatedKeyStage
from hardware.face_align import FaceAligner, load_predictor, similarity, warp
from hardware.preadc import quantise
from keys.drbg import Drbg
from keys.generate import sensor_key
from keys.profiles import DEFAULT_PROFILE, get_profile
from tools.bench.common import Progress, print_table, write_json
from tools.face.data import TRAIN_FILE, train_faces

T = TypeVar("T")
STEPS = ("landmarks", "fit", "warp", "key_stage_plain", "key_stage_aligned")
WARMUP = 20


@dataclass(frozen=True)
class AlignBench:
    """Median per-frame milliseconds of each step (STEPS), and what they were measured on."""

    frames: int
    side: int
    profile: str
    faces: str                            # the LFW file (tools.face.data)
    landmarks_ms: float
    fit_ms: float
    warp_ms: float
    key_stage_plain_ms: float
    key_stage_aligned_ms: float
    alignment_overhead_ms: float          # key_stage_aligned - key_stage_plain
    machine: str
    cpus: int
    load_1min: float                      # the machine's load average when the run ended (timings are contended above cpus)
    numpy: str
    dlib: str


def _timed(step: Callable[..., T], *args: object) -> tuple[float, T]:
    """Seconds `step(*args)` took, and its result."""
    t0 = time.perf_counter()
    result = step(*args)
    return time.perf_counter() - t0, result


def resized(crops: np.ndarray, side: int) -> np.ndarray:
    """Square crops (N, S, S, C) resampled bilinearly to (N, side, side, C), the same field of view."""
    s = side / crops.shape[1]
    scale = np.array([[s, 0.0, (s - 1) / 2], [0.0, s, (s - 1) / 2]])     # pixel centres stay centred
    return np.stack([warp(crop, scale, side) for crop in crops])


def run_align_bench(faces: str | Path | None = None, limit: int = 500, profile: str = DEFAULT_PROFILE,
                    side: int | None = None, progress: bool = True) -> AlignBench:
    """Time alignment and the key stage with and without it on `limit` LFW crops (the 64x64 train split,
    resampled to `side` x `side` when given), with a throwaway sensor key of `profile` held in memory."""
    crops, _ = train_faces(faces, limit=limit)
    if len(crops) <= WARMUP:
        raise ConfigError(f"bench align needs more than {WARMUP} face crops, got {len(crops)}")
    if side is not None and side != crops.shape[1]:
        crops = resized(crops, side)
    frames = crops.astype(np.float32) / np.float32(255)
    side = frames.shape[1]
    predictor = load_predictor()
    key = sensor_key(Drbg(bytes(32), "bench align"), (3, side, side), get_profile(profile).sensor)
    blob = key.to_bytes()
    plain, aligned = (SimulatedKeyStage("throwaway bench key", key.fingerprint, read=lambda _path: blob,
                                        align_faces=on) for on in (False, True))
    for stage in (plain, aligned):
        health = stage.check()
        if not health.ok:
            raise ConfigError(f"bench align: the throwaway sensor key did not load: {health.detail}")
    aligner = FaceAligner(side, predictor)

    def landmarks(frame: np.ndarray) -> np.ndarray:          # as the key stage finds them: on the 8-bit codes
        return aligner.landmarks(quantise(frame, 8))

    samples: dict[str, list[float]] = {step: [] for step in STEPS}
    show = Progress("align", f"{len(frames)} LFW crops {side}x{side}, profile {profile}", enabled=progress)
    with show.bar(enumerate(frames), "landmarks, fit, warp, key stage plain and aligned", length=len(frames)) as bar:
        for i, frame in bar:
            times = {}
            times["landmarks"], points = _timed(landmarks, frame)
            times["fit"], matrix = _timed(similarity, points, aligner.target)
            times["warp"], _ = _timed(warp, frame, matrix, side)
            times["key_stage_plain"], _ = _timed(plain, frame)
            times["key_stage_aligned"], _ = _timed(aligned, frame)
            if i >= WARMUP:
                for step, seconds in times.items():
                    samples[step].append(seconds)
    ms = {step: 1000.0 * statistics.median(v) for step, v in samples.items()}
    return AlignBench(frames=len(frames) - WARMUP, side=side, profile=profile, faces=f"{TRAIN_FILE}, train split",
                      landmarks_ms=ms["landmarks"], fit_ms=ms["fit"], warp_ms=ms["warp"],
                      key_stage_plain_ms=ms["key_stage_plain"], key_stage_aligned_ms=ms["key_stage_aligned"],
                      alignment_overhead_ms=ms["key_stage_aligned"] - ms["key_stage_plain"],
                      machine=f"{platform.machine()} {_cpu_name()}", cpus=os.cpu_count() or 0,
                      load_1min=round(os.getloadavg()[0], 2), numpy=np.__version__,
                      dlib=getattr(predictor[0], "__version__", "?"))


def _cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; a Raspberry Pi's board model), else the platform's processor."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return info.get("model name") or info.get("Model") or platform.processor()


@click.command()
@click.option("--faces", type=click.Path(file_okay=False), default=None,
              help="Folder holding lfw_dfunneled_64_rgb.npz (default: $KEYCAM_FACES_DIR or the research data folder).")
@click.option("--limit", type=click.IntRange(WARMUP + 1), default=500, show_default=True, help="Face crops timed.")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, help="Key profile of the throwaway sensor key.")
@click.option("--side", "sides", type=click.IntRange(8), multiple=True,
              help="Frame side the crops are resampled to (repeatable; default: the file's 64).")
@json_option("json_path", default="bench-align.json")
def align(faces: str | None, limit: int, profile: str, sides: tuple[int, ...], json_path: str | None) -> None:
    """Per-frame cost of face alignment in the simulated key stage (landmarks, warp, key stage with vs without).

    \b
    Example:
      keycam bench align --limit 500 --side 64 --side 112 --json tools/bench/results/align.json
    """
    runs = [run_align_bench(faces, limit, profile, side) for side in (sides or (None,))]
    for result in runs:
        print_table([("landmarks (dlib 5-point)", f"{result.landmarks_ms:.3f} ms"),
                     ("similarity fit", f"{result.fit_ms:.3f} ms"),
                     ("warp (bilinear)", f"{result.warp_ms:.3f} ms"),
                     ("key stage, plain", f"{result.key_stage_plain_ms:.3f} ms"),
                     ("key stage, aligned", f"{result.key_stage_aligned_ms:.3f} ms"),
                     ("alignment overhead", f"{result.alignment_overhead_ms:.3f} ms")],
                    f"keycam bench align: median of {result.frames} LFW crops {result.side}x{result.side}, "
                    f"profile {result.profile}, {result.machine}, {result.cpus} CPUs, load {result.load_1min}")
    write_json(json_path, {"runs": [asdict(result) for result in runs]})
