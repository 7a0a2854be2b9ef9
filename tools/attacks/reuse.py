"""Attack 4, model reuse: the stolen keyed model on plain frames, on another key's frames, and fine-tuned.

The fine-tuning attacker extracts the keyed network (its float weights; here taken from the keyed IR,
which is what the .tflite holds) and fine-tunes it on K labelled plain frames. The baseline is the
same attacker training the plain architecture from scratch on the same K frames: the keyed model is
worth stealing only if fine-tuning beats that.
"""
from __future__ import annotations

import numpy as np

from edge.runtime import TFLiteModel
from hardware.preadc import adc
from tools.attacks.target import AttackError, Target
from tools.bench.common import predict_labels

DEFAULT_K = (10, 100, 1000)
FINE_TUNE_STEPS = 60


def deployed_accuracies(target: Target) -> dict[str, float]:
    """The keyed int8 .tflite on its own keyed frames, on plain frames and on another device's keyed frames."""
    model = TFLiteModel(target.tflite_int8)
    acc = lambda frames, desc: float(np.mean(predict_labels(model, frames, desc, False) == target.labels))  # noqa: E731
    plain_u8 = adc(target.plain)
    return {"acc_keyed_int8": acc(target.keyed(target.plain), "keyed"), "acc_plain_frames": acc(plain_u8, "plain"),
            "acc_other_key": acc(target.keyed(target.plain, target.other), "other key")}


def fine_tune_curve(target: Target, ks: tuple[int, ...] = DEFAULT_K, steps: int = FINE_TUNE_STEPS) -> dict:
    """Accuracy on plain test frames after fine-tuning the keyed model (and training from scratch) on K frames."""
    from tools.attacks.torchnet import TorchNet, accuracy, train
    if max(ks) > len(target.train_plain):
        raise AttackError(f"K={max(ks)} labelled frames asked, only {len(target.train_plain)} loaded")
    out = {}
    for k in ks:
        x, y = target.train_plain[:k], target.train_labels[:k]
        tuned = train(TorchNet(target.keyed_net), x, y, steps)
        scratch = train(TorchNet(target.net).reset(), x, y, steps)
        out[str(k)] = {"fine_tuned": accuracy(tuned, target.plain, target.labels),
                       "scratch": accuracy(scratch, target.plain, target.labels)}
    return out


def run_reuse(target: Target, ks: tuple[int, ...] = DEFAULT_K, steps: int = FINE_TUNE_STEPS) -> tuple[dict, dict]:
    """All reuse measurements; `ks` empty skips the (PyTorch) fine-tuning part."""
    if ks:
        import torch
        torch.set_num_threads(1)
    result = deployed_accuracies(target)
    result["fine_tune_steps"] = steps
    result["fine_tune"] = fine_tune_curve(target, ks, steps) if ks else {}
    return result, {}
