"""The LFW View-2 verification protocol on embeddings: cross-fold accuracy and TMR at a fixed FMR."""
from __future__ import annotations

import numpy as np


def cosine_scores(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity of the two embeddings of every pair."""
    e = np.asarray(emb, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return np.sum(e[pairs[:, 0]] * e[pairs[:, 1]], axis=1)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (score >= t means 'same') with the highest accuracy on these pairs.

    Candidates are the midpoints between consecutive distinct scores (and both ends), so a threshold
    learnt on one fold does not sit exactly on one of its own pairs.
    """
    u = np.unique(scores)
    cands = np.concatenate([[u[0] - 1.0], (u[1:] + u[:-1]) / 2.0, [u[-1] + 1.0]])
    acc = [np.mean((scores >= t) == same) for t in cands]
    return float(cands[int(np.argmax(acc))])


def tmr_at_fmr(scores: np.ndarray, same: np.ndarray, fmr: float = 1e-2) -> float:
    """True-match rate at the threshold where at most `fmr` of the different-person pairs match."""
    impostor = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(fmr * len(impostor)))
    t = impostor[allowed] if allowed < len(impostor) else -np.inf
    return float(np.mean(scores[same] > t))


def verification_metrics(scores: np.ndarray, same: np.ndarray, fold: np.ndarray, fmr: float = 1e-2) -> dict:
    """LFW protocol: each fold is scored at the threshold chosen on the other folds; plus TMR@FMR."""
    same = np.asarray(same, dtype=bool)
    folds = np.unique(fold)
    if len(folds) < 2:
        raise ValueError("the verification protocol needs at least two folds")
    accs, thresholds = [], []
    for f in folds:
        test = fold == f
        t = best_threshold(scores[~test], same[~test])
        thresholds.append(t)
        accs.append(float(np.mean((scores[test] >= t) == same[test])))
    return {"accuracy": float(np.mean(accs)), "fold_accuracy": accs, "thresholds": thresholds,
            f"tmr_at_fmr{fmr:g}": tmr_at_fmr(scores, same, fmr), "pairs": int(len(scores))}


def decisions(scores: np.ndarray, fold: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Same/different decisions of every pair at its fold's threshold (order of np.unique(fold))."""
    out = np.empty(len(scores), dtype=bool)
    for f, t in zip(np.unique(fold), thresholds):
        out[fold == f] = scores[fold == f] >= t
    return out
