"""Attack 2, known/chosen plaintext: estimate the affine sensor key A0 (y = L x + c) by least squares.

Known plaintext: M pairs (plain frame, keyed frame) -> [L c] = lstsq([X 1], Y). Natural frames never
light some pixels (MNIST's border), so [X 1] stays rank-deficient and those columns of L stay unknown,
but decoding natural frames needs only the lit part. Chosen plaintext (physical access): a dark frame
and N unit impulses give c and every column of L in N + 1 frames; for a generalized-permutation key,
ceil(log2 N) binary-coded probes plus a dark and a flat frame already give it. Impulse estimates are
denoised by zeroing entries below 4 robust sigmas (the attacker knows keys are sparse). Everything is measured
through the 8-bit ADC, optionally with read noise.
"""
from __future__ import annotations

import numpy as np

from tools.attacks.metrics import similarity
from tools.attacks.target import AttackError, Target

DEFAULT_PAIRS = (10, 100, 400, 1000, 2000)


def affine_truth(target: Target) -> np.ndarray:
    """[L | c] of the victim's sensor key, (N, N + 1) (ground truth for scoring)."""
    key = target.keyset.sensor
    return np.hstack([key.linear_csr().toarray(), key.offset()[:, None]])


def relative_error(est: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(est - truth) / np.linalg.norm(truth))


def fit_affine(plain: np.ndarray, keyed: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Ridge least-squares [L | c] from pairs (stable when under-determined); keyed in ADC counts."""
    x = np.hstack([plain, np.ones((len(plain), 1))])
    gram = x.T @ x + ridge * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ (keyed / 255.0)).T


def sparsify(theta: np.ndarray) -> np.ndarray:
    """Zero the entries of an estimated [L | c] that are noise: |v| below 4 robust sigmas (keys are sparse)."""
    lin = theta[:, :-1]
    sigma = 1.4826 * np.median(np.abs(lin - np.median(lin)))
    return np.hstack([np.where(np.abs(lin) > max(4 * sigma, 1.0 / 255), lin, 0.0), theta[:, -1:]])


def decode(theta: np.ndarray, keyed: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Plain-frame estimates from keyed frames with an estimated [L | c] (ridge-regularised least squares)."""
    lin, c = theta[:, :-1], theta[:, -1]
    gram = lin.T @ lin
    gram[np.diag_indices_from(gram)] += ridge * max(np.trace(gram) / len(gram), 1e-12)
    return np.linalg.solve(gram, lin.T @ (keyed / 255.0 - c).T).T


def impulse_probes(n: int) -> np.ndarray:
    """Chosen probes: a dark frame then the N unit impulses (N + 1 frames)."""
    return np.vstack([np.zeros(n), np.eye(n)])


def from_impulses(keyed: np.ndarray) -> np.ndarray:
    """[L | c] from the keyed responses to `impulse_probes`."""
    y = keyed / 255.0
    return sparsify(np.hstack([(y[1:] - y[0]).T, y[0][:, None]]))


def binary_probes(n: int) -> np.ndarray:
    """Chosen probes for permutation-type keys: dark, flat, then one frame per bit of the pixel index."""
    bits = int(np.ceil(np.log2(n)))
    codes = (np.arange(n)[None, :] >> np.arange(bits)[:, None]) & 1
    return np.vstack([np.zeros(n), np.ones(n), codes]).astype(np.float64)


def from_binary(keyed: np.ndarray) -> np.ndarray:
    """[L | c] assuming a generalized-permutation key: source index from the bit pattern, gain from flat."""
    y = keyed.astype(np.float64) / 255.0
    dark, gain = y[0], y[1] - y[0]
    lit = (y[2:] - dark) > gain / 2
    src = np.clip((lit * (1 << np.arange(len(lit)))[:, None]).sum(axis=0), 0, len(dark) - 1)
    lin = np.zeros((len(dark), len(dark)))
    lin[np.arange(len(dark)), src] = gain
    return np.hstack([lin, dark[:, None]])


def run_plaintext(target: Target, pairs: tuple[int, ...] = DEFAULT_PAIRS, noise: float = 2.0 / 255,
                  test_frames: int = 200) -> tuple[dict, dict]:
    """Error of the estimated A0 and decoding quality vs number of pairs; chosen-probe recovery."""
    h, w = target.shape
    n = h * w
    truth = affine_truth(target)
    test = target.plain[:test_frames]
    test_keyed = target.keyed(test)
    known = {}
    for m in pairs:
        if m > len(target.train_plain):
            raise AttackError(f"{m} known pairs asked, only {len(target.train_plain)} training frames loaded")
        x = target.train_plain[:m]
        theta = fit_affine(x, target.keyed(x))
        recon = decode(theta, test_keyed)
        known[str(m)] = {"rel_error": relative_error(theta, truth), "never_lit": int(np.sum(x.max(axis=0) == 0)),
                         **similarity(recon, test, (h, w)), "recognised": target.recognised(recon)}
    chosen = {}
    for name, probes, solve in (("impulses", impulse_probes(n), from_impulses),
                                ("binary", binary_probes(n), from_binary)):
        for label, sigma in (("adc", 0.0), ("adc+noise", noise)):
            theta = solve(target.keyed(probes, noise=sigma, seed=1))
            chosen[f"{name}/{label}"] = {"frames": len(probes), "rel_error": relative_error(theta, truth),
                                         **similarity(decode(theta, test_keyed), test, (h, w))}
    best_known = known[str(max(pairs))]
    result = {"pixels": n, "known": known, "chosen": chosen, "noise_sigma": noise,
              "ssim": max([best_known["ssim"]] + [c["ssim"] for c in chosen.values()]),
              "frames_to_recover": _frames_to_recover(chosen)}
    return result, {"plain": test, "keyed": test_keyed,
                    "recon": np.clip(decode(from_impulses(target.keyed(impulse_probes(n))), test_keyed), 0, 1)}


def _frames_to_recover(chosen: dict) -> int | None:
    """Fewest chosen frames that decode held-out frames with SSIM >= 0.95 (None if no probe set does)."""
    ok = [c["frames"] for k, c in chosen.items() if k.endswith("/adc") and c["ssim"] >= 0.95]
    return min(ok) if ok else None
