"""Keying cost of a network and profile: projected size, and measured time and peak memory.

`python -m tools.keying.cost MODEL.onnx --profile stem [--write] [--calib N] [--invoke N]` runs key
generation, keying and (with --write) the int8 .tflite writer in this fresh process (with --invoke,
also N timed inferences of the written model) and prints one JSON line with wall times and the
process's peak RSS, so memory is measured without the caller's baggage.
Layers are keyed one at a time and dropped when not written, so a profile too large to hold
(e.g. the all-conv net under `full`) can still be timed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import scipy.sparse as sp

from keys.profiles import Profile, get_profile
from tools.ir import INPUT, Conv, Dense, Network, Resize, _window_pattern, resize_matrix
from tools.keying.keyed import derive_keyset, iter_keyed_layers, key_network
from tools.keying.rules import KeyPlan

FLATBUFFER_LIMIT = 2 ** 31     # a .tflite flatbuffer cannot exceed 2 GiB


def toeplitz_nnz(layer, in_shape: tuple[int, int, int]) -> int:
    """Stored non-zeros of a conv, pool or resize written as a sparse matrix (padding taps excluded)."""
    if isinstance(layer, Resize):
        return resize_matrix(layer, in_shape).nnz
    if isinstance(layer, Conv):
        _, valid, _ = _window_pattern(in_shape[1:], layer.weight.shape[2:], layer.stride, layer.pads, layer.dilation)
        return int(valid.sum()) * layer.weight.shape[0] * layer.weight.shape[1]
    _, valid, _ = _window_pattern(in_shape[1:], layer.kernel, layer.stride, (0, 0, 0, 0))
    return int(valid.sum()) * in_shape[0]


def projected_cost(net: Network, profile: str | Profile) -> dict:
    """Non-zeros of every layer that keying turns into a sparse matrix (tools.keying.rules.KeyPlan), and the
    float CSR bytes."""
    prof = get_profile(profile)
    plan = KeyPlan(net, prof)
    sparse_layers = []
    for i in plan.sparse_layers():
        layer, j = net.layers[i], net.inputs_of(i)[0]
        if isinstance(layer, Dense) or (j == INPUT and prof.sensor_layout == "patch"):
            continue          # dense layers stay dense; a patch stem becomes gather + 1x1 conv
        nnz = toeplitz_nnz(layer, plan.shapes[j])
        index_bytes = 2 if int(np.prod(plan.shapes[j])) < 1 << 16 else 4
        sparse_layers.append({"layer": i, "nnz": nnz, "csr_float_bytes": nnz * (4 + index_bytes)})
    total = sum(s["csr_float_bytes"] for s in sparse_layers)
    return {"profile": prof.name, "sparse_layers": sparse_layers, "nnz": sum(s["nnz"] for s in sparse_layers),
            "csr_float_bytes": total, "fits_one_tflite": total < FLATBUFFER_LIMIT,
            "dense_params": net.parameter_count()}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    Linux: VmHWM of /proc/self/status (getrusage's ru_maxrss survives exec, so a child started by
    a large parent would report the parent's peak); elsewhere ru_maxrss.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(onnx_path: str, profile: str, write: bool, calib: int, progress=None, invoke: int = 0) -> dict:
    """Time key generation, keying and (optionally) int8 writing and `invoke` inferences of one model."""
    from hardware.digitise import key_and_digitise
    from tools.onnx_import import load_onnx
    from tools.tflite.writer import write_tflite
    net = load_onnx(onnx_path)
    rss_loaded = peak_rss_mb()
    t0 = time.perf_counter()
    keyset = derive_keyset(os.urandom(32), "cost-device", "cost-model", net, profile)
    t1 = time.perf_counter()
    result = {"profile": keyset.profile, "keygen_s": t1 - t0, "rss_after_load_mb": rss_loaded}
    if write:
        keyed = key_network(net, keyset, progress, dtype=np.float32)
        t2 = time.perf_counter()
        frames = np.random.default_rng(0).uniform(size=(calib, int(np.prod(net.input_shape))))
        blob, _ = write_tflite(keyed, int8=True, calib=key_and_digitise(keyset.sensor, frames) / 255.0, release=True)
        del keyed
        t3 = time.perf_counter()
        result.update(keying_s=t2 - t1, write_int8_s=t3 - t2, size_int8=len(blob))
        if invoke:
            result["latency_ms"] = invoke_latency_ms(blob, key_and_digitise(keyset.sensor, frames), invoke)
    else:
        nnz = 0
        for layer in iter_keyed_layers(net, keyset, progress, dtype=np.float32):
            if isinstance(layer, Dense) and sp.issparse(layer.weight):
                nnz += layer.weight.nnz
            del layer
        t3 = time.perf_counter()
        result.update(keying_s=t3 - t1, keyed_nnz=nnz)
    result.update(total_s=t3 - t0, peak_rss_mb=peak_rss_mb())
    return result


def invoke_latency_ms(blob: bytes, frames: np.ndarray, count: int) -> float:
    """Median latency of `count` single-frame inferences (1 thread) after one warm-up."""
    from edge.runtime import TFLiteModel
    model = TFLiteModel(blob)
    model.invoke(frames[0])
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        model.invoke(frames[i % len(frames)])
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Measure keying cost in a fresh process (prints JSON).")
    ap.add_argument("onnx")
    ap.add_argument("--profile", default="stem")
    ap.add_argument("--write", action="store_true", help="also write the int8 .tflite")
    ap.add_argument("--calib", type=int, default=32, help="calibration frames for --write")
    ap.add_argument("--invoke", type=int, default=0, help="with --write: time this many inferences")
    a = ap.parse_args(argv)
    res = measure(a.onnx, a.profile, a.write, a.calib, progress=lambda m: print(m, file=sys.stderr, flush=True),
                  invoke=a.invoke)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
