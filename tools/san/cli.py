"""`keycam san`: train / eval / export the semi-adversarial gender-confounding networks (needs the train extra)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from base.cli import KeycamGroup, emit_json, json_option
from tools.san.memo import CACHE_ROOT
from tools.san.model_io import DEFAULT_MODEL

FACES_HELP = "folder with the LFW .npz files (default: $KEYCAM_FACES_DIR or ../shared/data/faces)"


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


@click.group(cls=KeycamGroup)
def san() -> None:
    """Semi-adversarial networks: perturb faces so unseen gender classifiers fail but matchers still match."""


_cache_dir = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                          default=CACHE_ROOT / "san", show_default=True,
                          help="memo of unseen-model outputs, keyed by image content")


@san.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MODEL, show_default=True,
              help="where to write the ensemble weights")
@click.option("--faces-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=FACES_HELP)
@click.option("--label-free", is_flag=True, help="train the label-free stage (one stage for every face, against a "
              "gender classifier retrained on its outputs; tools/san/label_free.py) instead of the papers' ensemble")
@click.option("--members", type=int, default=3, show_default=True, help="ensemble size (diverse augmentations; papers' "
              "ensemble only)")
@click.option("--epochs", type=int, default=None, help="adversarial / semi-adversarial epochs [label-free 10, ensemble 5]")
@click.option("--pretrain-epochs", type=int, default=None,
              help="ensemble: autoencoder pretraining epochs [2]; label-free: adversary warm-up epochs [1]")
@click.option("--steps-per-epoch", type=int, default=None, help="batches per epoch [label-free all, ensemble 80]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="use only the first N images of each split (quick runs)")
@click.option("--adversary", type=click.Choice(["member", "mean"]), default="member", show_default=True,
              help="each SAN confounds its own member's gender classifier, or the mean of all members' ones")
@click.option("--w-keep", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="weight of the identity (matcher feature) term")
@click.option("--w-adversary", type=click.FloatRange(min=0.0), default=None,
              help="label-free: weight of the retrained adversary's term [10]")
@click.option("--w-pixel", type=click.FloatRange(min=0.0), default=None, help="label-free: weight of the L1 term [1]")
@click.option("--w-match", type=click.FloatRange(min=0.0), default=None,
              help="label-free: weight of the two genders' thumbnail distribution gap [0]")
@click.option("--w-feature", type=click.FloatRange(min=0.0), default=None,
              help="label-free: weight of the two genders' distribution gap in classifier B's feature maps [200]")
@click.option("--w-ssim", type=click.FloatRange(min=0.0), default=None,
              help="label-free: weight of the SSIM shortfall below --ssim-floor [100]")
@click.option("--ssim-floor", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None,
              help="label-free: the SSIM each output should keep at strength 1 [0.92]")
@click.option("--w-colour", type=click.FloatRange(min=0.0), default=None,
              help="label-free: weight of the colour difference above --colour-ceiling [1]")
@click.option("--colour-ceiling", type=click.FloatRange(min=0.0), default=None,
              help="label-free: the most mean Delta E (blurred CIELAB) an output may move at strength 1 [3]")
@click.option("--w-colour-peak", type=click.FloatRange(min=0.0), default=None,
              help="label-free: weight of the colour peak (95th percentile of the Delta E map) above "
                   "--colour-peak-ceiling [1]")
@click.option("--colour-peak-ceiling", type=click.FloatRange(min=0.0), default=None,
              help="label-free: the most colour peak an output may have at strength 1 [6]")
def train(out: Path, faces_dir: Path | None, label_free: bool, members: int, epochs: int | None,
          pretrain_epochs: int | None, steps_per_epoch: int | None, seed: int, limit: int | None, adversary: str,
          w_keep: float, **label_free_terms: float | None) -> None:
    """Train the SAN on the fit people (LFW train people minus the validation people), then save it.
    Choose its operating point afterwards with `keycam san strength --write`.

    \b
    Example:
      keycam san train --label-free --out san.pt
      keycam san train --out san_ensemble.pt --members 3 --epochs 5      (the papers' ensemble)
    """
    _threads()
    from tools.san.model_io import save_ensemble

    given = {k: v for k, v in {"epochs": epochs, "pretrain_epochs": pretrain_epochs,
                                "max_steps_per_epoch": steps_per_epoch}.items() if v is not None}
    if label_free:
        given["warmup_epochs"] = given.pop("pretrain_epochs", 1)
        from tools.san.label_free import LabelFreeConfig, train_label_free
        terms = {k: v for k, v in label_free_terms.items() if v is not None}
        ensemble = train_label_free(LabelFreeConfig(seed=seed, limit=limit, w_keep=w_keep, **given, **terms),
                                    faces_dir, log=click.echo)
    else:
        given_terms = sorted("--" + k.replace("_", "-") for k, v in label_free_terms.items() if v is not None)
        if given_terms:
            raise click.UsageError(f"{', '.join(given_terms)}: label-free training only (add --label-free)")
        from tools.san.train import COMMITTED_SAN, TrainConfig, train_ensemble
        config = TrainConfig(members=members, seed=seed, limit=limit, adversary=adversary,
                             san=replace(COMMITTED_SAN, w_keep=w_keep, **given))
        ensemble = train_ensemble(config, faces_dir, log=click.echo)
    save_ensemble(ensemble, out)
    click.echo(f"wrote {out} ({out.stat().st_size // 1024} KiB, {len(ensemble.members)} member(s), "
               f"{ensemble.meta['train_seconds']:.0f} s)")


@san.command("eval")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MODEL, show_default=True,
              help="SAN ensemble weights")
@json_option("json_path", required=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the montage / plot / table go (default: the JSON file's folder; with JSON on stdout: here)")
@click.option("--faces-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=FACES_HELP)
@_cache_dir
@click.option("--no-cache", is_flag=True, help="recompute every unseen-model output")
@click.option("--limit", type=int, default=None, help="only the first N images of each set (quick check)")
@click.option("--member-matcher", is_flag=True, help="also run the (slow) unseen matcher on every member's X_OP")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the random-member ensemble")
@click.option("--opinion-epochs", type=click.IntRange(0, 200), default=12, show_default=True,
              help="epochs of the two second-opinion gender CNNs trained here (independent, adapted to the "
                   "SAN's outputs); 0 skips them")
def eval_(model: Path, json_path: str, out_dir: Path | None, faces_dir: Path | None, cache_dir: Path,
          no_cache: bool, limit: int | None, member_matcher: bool, seed: int, opinion_epochs: int) -> None:
    """Evaluate a SAN ensemble on UNSEEN gender classifier / face matcher and held-out LFW people.

    \b
    Example:
      keycam san eval --limit 200 --json results/san.json
    """
    _threads()
    from tools.san.evaluate import evaluate
    from tools.san.model_io import load_ensemble
    from tools.san.report import markdown_table, montage, privacy_utility_plot

    ensemble = load_ensemble(model)
    report = evaluate(ensemble, faces_dir, None if no_cache else cache_dir, limit, seed, member_matcher,
                      opinion_epochs, log=click.echo)
    faces, outputs, selected, deployed = report.pop("_montage_inputs")
    report["model"] = str(model)
    out_dir = out_dir or Path(json_path).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    emit_json(json_path, report)
    montage(faces, outputs, selected, out_dir / "san_montage.png", deployed)
    privacy_utility_plot(report, out_dir / "san_privacy_utility.png")
    table = markdown_table(report)
    (out_dir / "san_table.md").write_text(table + "\n")
    click.echo(table)
    keys = ["gender_bacc_orig", "gender_bacc_op", "verif_acc_orig", "verif_acc_op", "tmr_fmr1e-2_orig",
            "tmr_fmr1e-2_op", "ssim_op"]
    click.echo("headline: " + ", ".join(f"{k} {report[k]:.3f}" for k in keys))
    click.echo(f"targets: {report['targets']}; wrote {out_dir}/san_montage.png, "
               f"{out_dir}/san_privacy_utility.png, {out_dir}/san_table.md")


@san.command()
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MODEL, show_default=True,
              help="SAN ensemble weights (rewritten with the chosen strength when --write)")
@click.option("--faces-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=FACES_HELP)
@_cache_dir
@click.option("--change", type=click.Choice(["label_free", "differential", "residual"]), default=None,
              help="deployed change form (default: the model's stored one): label_free x + alpha (X_N - x) for everyone, "
                   "or the gendered x + alpha (X_OP - X_SM) / the papers' x + alpha (X_OP - x)")
@click.option("--member", type=int, default=0, show_default=True, help="ensemble member")
@click.option("--per-gender", is_flag=True, help="allow a different strength per source gender (gendered forms only)")
@click.option("--write", is_flag=True, help="store the chosen change form and operating point in the model file")
@click.option("--limit", type=int, default=None, help="use only the first N validation faces (quick runs)")
def strength(model: Path, faces_dir: Path | None, cache_dir: Path, change: str | None, member: int, per_gender: bool,
             write: bool, limit: int | None) -> None:
    """Choose the operating point on the VALIDATION people (LFW train people no network trained on) with a
    second-opinion gender classifier; no test person is used (tools/san/strength.py).

    \b
    Example:
      keycam san strength --write
    """
    _threads()
    from tools.san.evaluate import Evaluator
    from tools.san.model_io import load_ensemble, save_ensemble
    from tools.san.strength import choose_on_validation, strength_of

    ensemble = load_ensemble(model)
    change = change or ensemble.change
    if change == "label_free" and (per_gender or not ensemble.label_free):
        raise click.UsageError("--change label_free needs a label-free model (keycam san train --label-free) and "
                               "one strength for everyone (no --per-gender)")
    record = choose_on_validation(ensemble, member, change, Evaluator(cache_dir, click.echo), per_gender, faces_dir,
                                  limit=limit, log=click.echo)
    click.echo("validation grid (alpha_female, alpha_male: second-opinion gender bacc clean/captured, verif acc, "
               "drop, SSIM, Delta E mean / peak):")
    for p in record["grid"]:
        if per_gender or p["female"] == p["male"]:
            click.echo(f"  {p['female']:.2f}, {p['male']:.2f}: {p['clean_gender_bacc']:.3f}/{p['captured_gender_bacc']:.3f}, "
                       f"{p['verif_acc']:.3f}, {p['verif_drop']:+.3f}, {p['ssim']:.3f}, "
                       f"{p['colour_de']:.1f} / {p['colour_peak']:.1f}"
                       f"{'  meets targets' if p['meets_targets'] else ''}")
    c = record["choice"]
    click.echo(f"operating point: female {c['female']}, male {c['male']} ({'meets' if c['meets_targets'] else 'does NOT meet'} "
               "the targets on the validation people)")
    if write:
        ensemble.meta["strength"] = strength_of(c, change)
        ensemble.meta["change"] = change
        ensemble.meta["strength_selection"] = {k: v for k, v in record.items() if k != "grid"}
        save_ensemble(ensemble, model)
        click.echo(f"stored in {model}")


@san.command()
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MODEL, show_default=True)
@click.option("--member", type=int, default=None, help="ensemble member (default: the one `eval` selected, "
              "read from --report, else 0)")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="an eval JSON whose selected_member to export")
@click.option("--gender", type=click.Choice(["female", "male"]), default=None,
              help="source gender the stage is built for (selects the same / opposite prototypes); required for the "
                   "gendered change forms, refused for a label_free model (one stage for every face)")
@click.option("--size", type=int, default=64, show_default=True, help="face crop side (multiple of 32)")
@click.option("--strength", type=click.FloatRange(min=0.0), default=None,
              help="perturbation strength (default: the model's stored operating point for --gender, a label_free "
                   "model's one strength; the change form is the model's stored one)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="output .onnx")
@click.option("--tflite", "tflite_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="output .tflite (int8 unless --float)")
@click.option("--float", "as_float", is_flag=True, help="write the .tflite in float32 (with --key: the float32 CSR "
              "keyed stage)")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="the face model's sensor key (a key or key-set file; must be a pixel permutation): write the "
                   "keyed stage (int8 GATHER + DEPTHWISE_CONV_2D sparse layers), whose input and output frames "
                   "both carry it")
@click.option("--faces-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=FACES_HELP)
@click.option("--calib", type=click.IntRange(1, 4000), default=256, show_default=True,
              help="train-split faces of --gender (label_free: of both genders, alternating) for int8 calibration")
@click.option("--check", type=click.IntRange(1, 1000), default=64, show_default=True,
              help="test-split faces of --gender (label_free: of both genders) the .tflite is checked on against torch")
def export(model: Path, member: int | None, report: Path | None, gender: str | None, size: int,
           strength: float | None,
           out: Path | None, tflite_path: Path | None, as_float: bool, key_path: Path | None,
           faces_dir: Path | None, calib: int, check: int) -> None:
    """Export one SAN member as a stage (face crop in, deployed output out): ONNX (--out) and/or TFLite
    (--tflite).

    \b
    Example:
      keycam san export --tflite san.tflite --key sensor.key        (the label-free default: no --gender)
      keycam san export --model tools/san/weights/san_ensemble.pt --gender female --out san_female.onnx
    """
    _threads()
    from tools.san.errors import SanModelError
    from tools.san.export import make_stage
    from tools.san.model_io import load_ensemble

    if out is None and tflite_path is None:
        raise SanModelError("nothing to write: give --out FILE.onnx and/or --tflite FILE.tflite")
    if key_path is not None and tflite_path is None:
        raise SanModelError("--key keys the TFLite stage: give --tflite FILE.tflite too")
    if member is None:
        member = 0
        if report is not None:
            try:
                member = int(json.loads(report.read_text())["selected_member"])
            except (OSError, ValueError, KeyError) as exc:
                raise SanModelError(f"cannot read selected_member from {report}: {exc}") from exc
    ensemble = load_ensemble(model)
    stage = make_stage(ensemble, member, gender, size, strength)
    what = f"member {member}, {stage.faces}, {size}x{size}, {stage.change} change, strength {stage.strength:g}"
    if out is not None:
        _export_onnx(stage, out, what)
    if tflite_path is not None:
        if key_path is None:
            _export_tflite(stage, member, not as_float, faces_dir, calib, check, tflite_path, what)
        else:
            _export_keyed_tflite(stage, member, key_path, not as_float, faces_dir, calib, check, tflite_path, what)


def _export_onnx(stage, out: Path, what: str) -> None:
    import numpy as np
    import torch

    from tools.san.errors import SanModelError
    from tools.san.export import export_onnx

    export_onnx(stage, out)
    size = stage.size
    click.echo(f"wrote {out} ({what})")
    try:
        import onnxruntime as ort
    except ImportError:
        click.echo("onnxruntime not installed: exported graph not cross-checked")
        return
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"face": x})[0]
    with torch.no_grad():
        want = stage(torch.from_numpy(x)).numpy()
    err = float(np.abs(got - want).max())
    if err > 1e-4:
        raise SanModelError(f"exported ONNX differs from the torch stage by {err:.2e}")
    click.echo(f"onnxruntime matches torch (max abs diff {err:.1e})")


def _report_vs_torch(stage, blob: bytes, faces, key=None) -> None:
    from tools.san.tflite_check import compare_with_torch

    err = compare_with_torch(stage, blob, faces, key, key)
    which = "faces of both genders" if stage.gender is None else f"{stage.gender_name} faces"
    click.echo(f"TFLite vs torch on {err['n_faces']} held-out {which}: max abs {err['max_abs']:.2e}, "
               f"mean abs {err['mean_abs']:.1e}, SSIM {err['ssim']:.4f}, PSNR {err['psnr']:.1f} dB")


def _export_tflite(stage, member: int, int8: bool, faces_dir: Path | None, calib: int, check: int, path: Path,
                   what: str) -> None:
    from tools.san.stage import write_san_tflite
    from tools.san.tflite_check import stage_faces

    calib_faces = stage_faces(stage, "train", calib, faces_dir) if int8 else None
    blob = write_san_tflite(stage, int8, calib_faces, metadata={"member": member})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    click.echo(f"wrote {path} ({len(blob) // 1024} KiB, {'int8' if int8 else 'float32'}, unkeyed; {what})")
    _report_vs_torch(stage, blob, stage_faces(stage, "test", check, faces_dir))


KEYED_INT8_TOLERANCE = 0.1     # keyed int8 vs K(unkeyed int8), [0, 1] units: ~2x the worst measured (0.055)


def _export_keyed_tflite(stage, member: int, key_path: Path, int8: bool, faces_dir: Path | None, calib: int,
                         check: int, path: Path, what: str) -> None:
    from edge.keystage import load_sensor_key
    from tools.san.errors import SanModelError
    from tools.san.key_checks import clear_key_findings
    from tools.san.stage import write_keyed_san_tflite, write_san_tflite
    from tools.san.tflite_check import compare_keyed, stage_faces

    key = load_sensor_key(key_path)
    meta = {"member": member}
    calib_faces = stage_faces(stage, "train", calib, faces_dir) if int8 else None
    # hidden keys: a fresh secret, never stored
    blob = write_keyed_san_tflite(stage, key, meta, int8=int8, calib_faces=calib_faces)
    findings = clear_key_findings(blob, key, stage.size)
    if findings:
        raise SanModelError(f"the keyed stage stores the key in clear ({', '.join(findings)}); not written")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    layers = "int8 GATHER + DEPTHWISE_CONV_2D" if int8 else "float32 CSR"
    click.echo(f"wrote {path} ({len(blob) // 1024} KiB, {layers} sparse layers, keyed with {key.fingerprint[:12]} on "
               f"input and output; {what}); no run of the key's permutation in its bytes")
    click.echo(f"RESEARCH EXPORT IN CLEAR: {path} is key material (a keyed model's weights determine its key, "
               "see `keycam attack model-file`); do not copy it to a device or share it", err=True)
    faces = stage_faces(stage, "test", check, faces_dir)
    _report_vs_torch(stage, blob, faces, key)
    plain = write_san_tflite(stage, int8, calib_faces, metadata=meta)
    diff = compare_keyed(plain, blob, key, key, faces)
    kind = "int8" if int8 else "float"
    if diff > (KEYED_INT8_TOLERANCE if int8 else 1e-5):
        raise SanModelError(f"the keyed stage differs from the unkeyed {kind} one up to the key by {diff:.2e}")
    click.echo(f"keyed stage vs the key applied to the unkeyed {kind} stage on {len(faces)} faces: max abs diff "
               f"{diff:.1e}" + (" (both quantised separately)" if int8 else ""))
