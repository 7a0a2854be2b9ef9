"""Checks of an exported SAN .tflite: the faces a stage is calibrated and checked on, the .tflite against the
torch stage on them, and keyed against plain."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge.runtime import TFLiteModel
from hardware.digitise import key_and_digitise
from hardware.preadc import quantise
from keys.factors import Key
from tools.san.data import load_faces64, to_float, to_uint8
from tools.san.export import SanStage
from tools.san.metrics import psnr, ssim


def alternating_genders(gender: np.ndarray) -> np.ndarray:
    """Indices of all faces, alternating between the genders present (female, male, female, ...; each gender in
    its own order; the rest of the larger group once the other runs out)."""
    rank = np.zeros(len(gender), np.int64)              # position of each face among the faces of its gender
    for g in np.unique(gender):
        rank[gender == g] = np.arange(np.sum(gender == g))
    return np.lexsort((gender, rank))


def stage_faces(stage: SanStage, split: str, limit: int, faces_dir: Path | None = None) -> np.ndarray:
    """Up to `limit` uint8 LFW faces of `split` for `stage`, resized to its size: faces of the stage's gender, or
    of both genders alternating for the label-free stage (it runs on every face)."""
    faces = load_faces64(split, faces_dir)
    order = alternating_genders(faces.gender) if stage.gender is None else np.flatnonzero(faces.gender == stage.gender)
    images = faces.images[order[:limit]]
    if stage.size != images.shape[1]:
        x = F.interpolate(torch.from_numpy(to_float(images)), size=(stage.size, stage.size), mode="bilinear",
                          align_corners=False)
        images = to_uint8(x.clamp(0, 1).numpy())
    return np.ascontiguousarray(images)


def apply_key(key: Key, frame: np.ndarray) -> np.ndarray:
    """A frame (H,W,3) keyed as the pre-ADC stage lays it out: key on the CHW vector, back to H, W, C."""
    h, w, c = frame.shape
    return key.apply(frame.transpose(2, 0, 1).reshape(-1).astype(np.float64)).reshape(c, h, w).transpose(1, 2, 0)


def key_frame(key: Key, frame: np.ndarray) -> np.ndarray:
    """A uint8 frame (H,W,3) keyed as the device's 8-bit sensor delivers it."""
    return key_and_digitise(key, frame[None] / 255.0)[0]


def unkey_frame(key: Key, frame: np.ndarray) -> np.ndarray:
    """Inverse of `key_frame` for float frames (H,W,3)."""
    h, w, c = frame.shape
    return key.apply_inverse(frame.transpose(2, 0, 1).reshape(-1)).reshape(c, h, w).transpose(1, 2, 0)


def stage_outputs(model_bytes: bytes, faces: np.ndarray, in_key: Key | None = None,
                  out_key: Key | None = None) -> np.ndarray:
    """Float outputs (N,S,S,3) of a SAN .tflite on uint8 faces (N,S,S,3); a keyed model gets keyed faces and its
    output is unkeyed."""
    model = TFLiteModel(model_bytes)
    got = []
    for face in faces:
        out = model.invoke(face if in_key is None else key_frame(in_key, face)).reshape(face.shape)
        got.append(out if out_key is None else unkey_frame(out_key, out))
    return np.stack(got)


def unseen_gender_scores(model_bytes: bytes, faces: np.ndarray, gender: np.ndarray, key: Key | None = None,
                         cache_dir=None) -> dict[str, float]:
    """The unseen gender classifier (tools.san.unseen, eval extra) on a SAN .tflite's outputs for uint8 faces with
    labels `gender` (0 female, 1 male): accuracy, balanced accuracy, per-gender recall."""
    from tools.san.metrics import gender_scores
    from tools.san.unseen import UnseenGender

    images = quantise(stage_outputs(model_bytes, faces, key, key))
    return gender_scores(UnseenGender(cache_dir).predict(images), np.asarray(gender))


def compare_with_torch(stage: SanStage, model_bytes: bytes, faces: np.ndarray, in_key: Key | None = None,
                       out_key: Key | None = None) -> dict[str, float]:
    """Max / mean abs error (in [0,1] units), SSIM and PSNR of the .tflite output against the torch stage on
    uint8 faces (N,S,S,3); a keyed model gets keyed faces and its output is unkeyed before comparing."""
    got = stage_outputs(model_bytes, faces, in_key, out_key)
    with torch.no_grad():
        want = stage(torch.from_numpy(faces.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)).numpy()
    want = want.transpose(0, 2, 3, 1)
    err = np.abs(got - want)
    return {"max_abs": float(err.max()), "mean_abs": float(err.mean()),
            "ssim": float(ssim(quantise(want), quantise(got)).mean()),
            "psnr": float(psnr(quantise(want), quantise(got)).mean()), "n_faces": len(faces)}


def compare_keyed(plain_bytes: bytes, keyed_bytes: bytes, in_key: Key, out_key: Key, faces: np.ndarray) -> float:
    """Max abs difference between keyed(key_in(x)) and key_out(plain(x)) over uint8 faces (0 when exact)."""
    plain, keyed = TFLiteModel(plain_bytes), TFLiteModel(keyed_bytes)
    worst = 0.0
    for face in faces:
        want = plain.invoke(face).reshape(face.shape)
        got = keyed.invoke(key_frame(in_key, face)).reshape(face.shape)
        worst = max(worst, float(np.abs(got - apply_key(out_key, want)).max()))
    return worst
