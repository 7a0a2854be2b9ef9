"""Attack 3, learned inversion: a decoder trained on (keyed, plain) pairs, applied to the victim's frames.

The realistic ciphertext-only attacker owns a device of the same product with a DIFFERENT key and
trains on its pairs; the insider attacker has pairs from the victim's own key. Scored by SSIM/PSNR on
held-out victim frames (test split; training pairs come from the training split). `prior_only` scores
the mean training frame, which any attacker gets without looking at keyed frames at all.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tools.attacks.metrics import similarity
from tools.attacks.target import AttackError, Target
from tools.attacks.torchnet import train

DEFAULT_PAIRS = 2000
DEFAULT_STEPS = 400
HIDDEN = 512


def decoder(n: int) -> nn.Module:
    """A small MLP decoder: keyed frame (N) -> plain frame (N) in [0, 1]."""
    return nn.Sequential(nn.Linear(n, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n), nn.Sigmoid())


def fit_decoder(keyed: np.ndarray, plain: np.ndarray, steps: int, batch: int = 64, seed: int = 0) -> nn.Module:
    """Train a decoder on (keyed uint8, plain float) pairs with MSE (Adam, fixed number of steps)."""
    torch.manual_seed(seed)
    model = decoder(keyed.shape[1])
    return train(model, keyed / 255.0, plain, steps, batch, lr=1e-3, seed=seed, loss=F.mse_loss,
                 target_dtype=torch.float32)


@torch.no_grad()
def apply_decoder(model: nn.Module, keyed: np.ndarray) -> np.ndarray:
    return model(torch.tensor(keyed / 255.0, dtype=torch.float32)).numpy()


def run_inversion(target: Target, pairs: int = DEFAULT_PAIRS, steps: int = DEFAULT_STEPS,
                  test_frames: int = 200) -> tuple[dict, dict]:
    """SSIM/PSNR of decoders trained with another key's pairs and with the victim key's pairs."""
    torch.set_num_threads(1)
    if pairs > len(target.train_plain):
        raise AttackError(f"{pairs} training pairs asked, only {len(target.train_plain)} training frames loaded")
    h, w = target.shape
    plain = target.train_plain[:pairs]
    test = target.plain[:test_frames]
    victim = target.keyed(test)
    result, recon = {"pairs": pairs, "steps": steps}, {}
    for name, keyset in (("other_key", target.other), ("same_key", target.keyset)):
        model = fit_decoder(target.keyed(plain, keyset), plain, steps)
        recon[name] = apply_decoder(model, victim)
        result[name] = {**similarity(recon[name], test, (h, w)), "recognised": target.recognised(recon[name])}
    prior = np.repeat(plain.mean(axis=0, keepdims=True), len(test), 0)
    result["prior_only"] = {**similarity(prior, test, (h, w)), "blank_ssim": similarity(0 * test, test, (h, w))["ssim"]}
    result["ssim"] = result["other_key"]["ssim"]
    return result, {"plain": test, "keyed": victim, "recon": recon["other_key"], "recon_same": recon["same_key"]}
